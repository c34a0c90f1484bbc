"""The paper's figures from the store's DataFrames (matplotlib, imported lazily).

Every ``*_ax`` function takes a DataFrame (``store.runs(...)`` / ``store.history(...)`` or an
experiment's ``results(store)``) and an optional ``ax`` and returns the Axes; ``*_figure``
functions compose a whole figure and return the Figure. Nothing here calls ``plt.show()``.

Style as the official plots: mean ± 2 SD across seeds as a line with a band, every run as a
dot; sharpness multiplied by 4 (the {0,1} -> ±1 label scale; plots only, the store keeps the
raw value); log axes for LayerNorm blowup. Only converged runs (eval MSE < 1e-3) are drawn
unless ``converged_only=False``; ``converged_counts`` shows how many that leaves.

Every ``*_figure`` takes a keyword-only ``title`` (``Experiment.plot`` passes the experiment,
preset and overridden parameters) and heads the figure with it and a caption saying which runs
are drawn and what the band is; a panel with nothing to draw says why instead of staying blank.
Tick labels stay readable: integer n gets integer ticks, log axes choose their ticks from the
range they span, lengths that double (the scratchpad's) get a log2 axis.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: the paper's colours per target (seaborn's default palette order)
COLORS = {"parity": "#1f77b4", "majority": "#ff7f0e", "first": "#2ca02c", "mean": "#d62728",
          "sparse_parity": "#9467bd"}
LABELS = {"parity": "PARITY", "majority": "MAJORITY", "first": "FIRST", "mean": "MEAN",
          "sparse_parity": "SPARSE PARITY"}
SINGLE_COLUMN = (3.5, 2.625)
#: what the line and band of ``_mean_band`` are, as every caption says it
BAND = "line: mean, band: mean ± 2 SD across seeds{}, dots: runs"
#: the paper's convergence filter, as captions say it
CONVERGED = "converged runs only (eval MSE < 1e-3)"


def _plt():
    import matplotlib.pyplot as plt  # lazily: matplotlib is the optional "plot" extra

    return plt


def _style(ax):
    ax.set_facecolor("white")
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return ax


def _legend(ax, fontsize="small"):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=fontsize)


def _log(ax, axis="y"):
    """A log axis whose tick labels never crowd: decades on long ranges, 1-3 or 1-2-5 steps on
    short ones, plain ticks when less than a factor 3 is shown."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    getattr(ax, f"set_{axis}scale")("log")
    target = getattr(ax, f"{axis}axis")
    target.set_major_locator(_log_locator())
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _log_locator():
    from matplotlib.ticker import LogLocator, MaxNLocator

    class SpanLogLocator(LogLocator):
        """Chooses the ticks from the decades the axis spans when it is drawn."""

        def tick_values(self, vmin, vmax):
            vmin, vmax = sorted((vmin, vmax))
            if not (vmin > 0 and math.isfinite(vmax)):
                return super().tick_values(vmin, vmax)
            decades = math.log10(vmax / vmin)
            if decades < 0.5:
                return MaxNLocator(nbins=3, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)
            subs = (1.0, 2.0, 5.0) if decades < 1 else (1.0, 3.0) if decades < 2 else (1.0,)
            return LogLocator(base=10, subs=subs, numticks=6).tick_values(vmin, vmax)

    return SpanLogLocator(base=10)


def _integer_ticks(axis):
    """Integer quantities (input length n) get integer ticks only."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _log2_lengths(ax):
    """A log2 x axis for lengths that double (4, 8, ..., 1024), labelled as integers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2, numticks=6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _note(ax, text):
    """Say in an empty panel what is missing, instead of leaving it blank."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize="small", color="#666666",
            wrap=True)


def _caption(fig, title, details):
    """Above the figure: what it is (``title``: experiment and preset) and how to read it (filter,
    band), wrapped to the figure's width."""
    import textwrap

    details = textwrap.fill(details, width=int(15 * fig.get_figwidth())) if details else details
    fig.suptitle("\n".join(t for t in (title, details) if t), fontsize="small")


def _figure_legend(fig, axes, ncols=4):
    """One legend below the panels for series that every panel shares (the panels' own removed)."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", frameon=False,
                   fontsize="small", ncols=min(ncols, len(entries)))


def _missing(runs, targets, converged_only=True):
    """Text naming the targets of ``runs`` with no run drawn, e.g. "no converged run to draw: PARITY (0/3)"
    (converged / finished runs); "" when every target has runs to draw."""
    if not len(runs):
        return "no finished runs"
    drawn = converged(runs) if converged_only else runs
    absent = [f"{LABELS.get(t, t)} ({int((drawn['target'] == t).sum())}/{int((runs['target'] == t).sum())})"
              for t in (targets or _targets(runs)) if not (drawn["target"] == t).any()]
    return f"no {'converged ' if converged_only else ''}run to draw: {', '.join(absent)}" if absent else ""


def _targets(df):
    """Targets present in ``df``: the paper's four in its order, then any others sorted."""
    present = set(df["target"]) if len(df) else set()
    return [t for t in COLORS if t in present] + sorted(present - set(COLORS))


def _axes(ax, figsize=SINGLE_COLUMN):
    if ax is None:
        plt = _plt()
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return _style(ax)


def converged(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that pass the paper's filter (eval MSE < 1e-3)."""
    if not len(runs) or "converged" not in runs:
        return runs.iloc[0:0]
    return runs[runs["converged"].astype(bool) & (runs["status"] == "ok")]


def _column(runs, metric):
    values = runs[metric].astype(float)
    return 4.0 * values if metric in ("sharpness", "sharpness_stderr") else values


def _mean_band(ax, df, x, metric, color, label, limits=(-math.inf, math.inf), linestyle="-", marker="o"):
    """Mean ± 2 SD across seeds per x, plus every run as a dot; the band is clipped to
    ``limits`` (the range the quantity can take, e.g. [0, 1] for an accuracy)."""
    y = _column(df, metric)
    grouped = pd.DataFrame({"x": df[x].astype(float), "y": y}).groupby("x")["y"]
    mean, sd = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    ax.plot(mean.index, mean.values, color=color, label=label, linewidth=1.5, marker=marker, markersize=2.5,
            linestyle=linestyle)
    low, high = (mean - 2 * sd).clip(*limits), (mean + 2 * sd).clip(*limits)
    ax.fill_between(mean.index, low.values, high.values, color=color, alpha=0.2, linewidth=0)
    ax.scatter(df[x].astype(float), y, color=color, s=6, alpha=0.5, linewidths=0)


def metric_vs_length_ax(runs, metric="sharpness", targets=None, ax=None, converged_only=True, log=False,
                        ylabel=None, *, log2_lengths=False):
    """Any final metric vs input length n, one colour per target (mean ± 2 SD + runs);
    ``log2_lengths`` for lengths that double (4, 8, ..., 1024)."""
    ax = _axes(ax)
    df = converged(runs) if converged_only else runs
    drawn = [t for t in (targets or _targets(df)) if metric in df and (df["target"] == t).any()]
    for t in drawn:
        _mean_band(ax, df[df["target"] == t].dropna(subset=[metric]), "n", metric, COLORS.get(t), LABELS.get(t, t))
    if not drawn:
        _note(ax, _missing(runs, targets, converged_only) or f"no values of {metric}")
    if log:
        _log(ax, "y")
    if log2_lengths:
        _log2_lengths(ax)
    else:
        _integer_ticks(ax.xaxis)
    ax.set_xlabel("input length $n$")
    ax.set_ylabel(ylabel or metric)
    if drawn:
        _legend(ax, "small")
    return ax


def sharpness_vs_length_ax(runs, targets=None, ax=None, converged_only=True):
    """Fig. 1 / 5: sharpness (×4) vs n."""
    ax = metric_vs_length_ax(runs, "sharpness", targets, ax, converged_only, ylabel="sharpness (×4)")
    ax.yaxis.set_major_formatter(_four_decimals())
    return ax


def blowup_vs_length_ax(runs, targets=None, ax=None, converged_only=True):
    """Fig. 6/7: LayerNorm blowup (official ``maxs_prod``) vs n, log axis."""
    return metric_vs_length_ax(runs, "blowup_maxs_prod", targets, ax, converged_only, log=True,
                               ylabel="LayerNorm blowup")


def norm_vs_length_ax(runs, targets=None, ax=None, converged_only=True):
    """Fig. 7/8: parameter norm (positional embeddings excluded) vs n."""
    return metric_vs_length_ax(runs, "param_norm", targets, ax, converged_only, ylabel="parameter norm")


def _four_decimals():
    from matplotlib.ticker import FormatStrFormatter

    return FormatStrFormatter("%.4f")


# ---- regression slopes --------------------------------------------------------------------------
def _t_quantile(p, df):
    """Student-t quantile (scipy if present, else a Cornish-Fisher expansion, < 1e-3 off for df >= 3)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(p, df))
    except ImportError:  # pragma: no cover - scipy is usually there
        from statistics import NormalDist

        z = NormalDist().inv_cdf(p)
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        return z + g1 / df + g2 / df**2 + g3 / df**3


def slopes(runs, metric="sharpness", x="n", converged_only=True, level=0.95) -> pd.DataFrame:
    """Least-squares slope of ``metric`` (sharpness ×4) vs ``x`` per target with a ``level``
    confidence interval (t distribution), r, and the number of runs used."""
    df = converged(runs) if converged_only else runs
    rows = []
    for t in _targets(df):
        sub = df[df["target"] == t].dropna(subset=[metric])
        xs, ys = sub[x].astype(float).to_numpy(), _column(sub, metric).to_numpy()
        k = len(xs)
        row = dict(target=t, slope=math.nan, ci_low=math.nan, ci_high=math.nan, stderr=math.nan, r=math.nan, runs=k,
                   lengths=int(len(set(xs))))
        if k >= 3 and len(set(xs)) >= 2:
            xm, ym = xs.mean(), ys.mean()
            sxx = ((xs - xm) ** 2).sum()
            slope = ((xs - xm) * (ys - ym)).sum() / sxx
            resid = ys - (ym + slope * (xs - xm))
            se = math.sqrt((resid**2).sum() / (k - 2) / sxx)
            q = _t_quantile(0.5 + level / 2, k - 2)
            syy = ((ys - ym) ** 2).sum()
            row.update(slope=slope, stderr=se, ci_low=slope - q * se, ci_high=slope + q * se,
                       r=float(((xs - xm) * (ys - ym)).sum() / math.sqrt(sxx * syy)) if syy > 0 else math.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=["target", "slope", "ci_low", "ci_high", "stderr", "r", "runs", "lengths"])


def frontier_shift(runs, converged_only=True, level=0.95) -> pd.DataFrame:
    """How the norm/blowup tradeoff moves with n, per target: the least-squares fit
    ``param_norm = a + b log10(blowup) + c n`` over the (converged) runs, with c's ``level``
    confidence interval (t distribution). c > 0: at a given blowup, longer inputs need a larger
    parameter norm, so the frontier moves outward with n (the paper's claim for PARITY)."""
    df = converged(runs) if converged_only else runs
    rows = []
    for t in _targets(df):
        sub = df[df["target"] == t].dropna(subset=["blowup_maxs_prod", "param_norm"])
        sub = sub[sub["blowup_maxs_prod"].astype(float) > 0]
        n, y = sub["n"].astype(float).to_numpy(), sub["param_norm"].astype(float).to_numpy()
        X = np.column_stack([np.ones_like(n), np.log10(sub["blowup_maxs_prod"].astype(float).to_numpy()), n])
        row = dict(target=t, per_bit=math.nan, ci_low=math.nan, ci_high=math.nan, per_decade=math.nan, runs=len(y),
                   lengths=int(len(set(n))))
        if len(y) > 3 and len(set(n)) >= 2 and np.linalg.matrix_rank(X) == 3:
            coef, *_ = np.linalg.lstsq(X, y, rcond=None)
            dof = len(y) - 3
            sigma2 = float(((y - X @ coef) ** 2).sum()) / dof
            se = math.sqrt(sigma2 * np.linalg.inv(X.T @ X)[2, 2])
            q = _t_quantile(0.5 + level / 2, dof)
            row.update(per_bit=float(coef[2]), ci_low=float(coef[2] - q * se), ci_high=float(coef[2] + q * se),
                       per_decade=float(coef[1]))
        rows.append(row)
    return pd.DataFrame(rows, columns=["target", "per_bit", "ci_low", "ci_high", "per_decade", "runs", "lengths"])


def converged_counts(runs) -> pd.DataFrame:
    """Converged runs / finished runs per (target, n), as strings "k/m"."""
    if not len(runs):
        return pd.DataFrame()
    ok = runs["converged"].astype(bool) & (runs["status"] == "ok")
    table = runs.assign(ok=ok).groupby(["target", "n"])["ok"].agg(["sum", "count"])
    text = table.apply(lambda r: f"{int(r['sum'])}/{int(r['count'])}", axis=1).unstack("n")
    order = [t for t in COLORS if t in text.index] + [t for t in text.index if t not in COLORS]
    return text.loc[order]


def scaling_report(runs) -> str:
    """The printed summary of a scaling sweep: slopes with 95% CIs and converged-run counts."""
    if not len(runs):
        return "no finished runs"
    s = slopes(runs)
    lines = ["sharpness (×4) vs length: least-squares slope per target, converged runs only (eval MSE < 1e-3)"]
    for r in s.itertuples():
        lines.append(f"  {LABELS.get(r.target, r.target):9s} slope {r.slope:+.5f} per bit   95% CI "
                     f"[{r.ci_low:+.5f}, {r.ci_high:+.5f}]   r={r.r:+.2f}   {r.runs} runs over {r.lengths} lengths")
    verdict = parity_verdict(s)
    if verdict:
        lines.append(verdict)
    lines.append("converged runs / finished runs per (target, n):")
    lines.append(converged_counts(runs).to_string())
    return "\n".join(lines)


def parity_verdict(slope_table) -> str:
    """Whether PARITY's slope is positive with a CI above every other target's CI."""
    s = slope_table.set_index("target")
    if "parity" not in s.index or not np.isfinite(s.loc["parity", "ci_low"]):
        return ""
    others = [t for t in s.index if t != "parity" and np.isfinite(s.loc[t, "ci_high"])]
    above = all(s.loc["parity", "ci_low"] > s.loc[t, "ci_high"] for t in others)
    positive = s.loc["parity", "ci_low"] > 0
    return (f"PARITY's slope is {'positive' if positive else 'NOT significantly positive'} and its CI lies "
            f"{'above' if above else 'NOT above'} the CIs of {', '.join(LABELS.get(t, t) for t in others)}")


def scaling_figure(runs, targets=None, converged_only=True, *, title=None):
    """Fig. 1 / 5–8 in one row: sharpness (×4), LayerNorm blowup (log) and parameter norm vs n,
    one legend for the three panels. ``title`` (e.g. experiment and preset) heads the caption,
    which says the filter and the band, names targets with no run to draw, and gives the
    sharpness slopes ("n/a" where fewer than 3 runs over 2 lengths remain)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(3 * SINGLE_COLUMN[0], SINGLE_COLUMN[1] + 0.6), layout="constrained")
    sharpness_vs_length_ax(runs, targets, axes[0], converged_only)
    blowup_vs_length_ax(runs, targets, axes[1], converged_only)
    norm_vs_length_ax(runs, targets, axes[2], converged_only)
    _figure_legend(fig, axes)
    slope = slopes(runs, converged_only=converged_only).set_index("target")["slope"]
    shown = targets or _targets(runs)
    if shown:
        text = "; ".join(f"{LABELS.get(t, t)} " + (f"{slope[t]:+.4f}" if np.isfinite(slope.get(t, math.nan)) else "n/a")
                         for t in shown)
        axes[0].set_title(f"slopes per bit: {text}", fontsize="x-small", loc="left")
    details = "; ".join(t for t in ((CONVERGED if converged_only else "all finished runs"), BAND.format(""),
                                    _missing(runs, targets, converged_only)) if t)
    _caption(fig, title, details)
    return fig


# ---- scratchpad ---------------------------------------------------------------------------------
#: Fig. 11's panels: (column, y label); the blowups are the official hooks' (paper.md §9.6)
SCRATCHPAD_PANELS = (("sharpness", "sharpness (×4)"),
                     ("blowup_official_encoder_maxs_prod", "encoder LayerNorm blowup"),
                     ("blowup_official_decoder_maxs_prod", "decoder LayerNorm blowup"),
                     ("param_norm", "parameter norm"))


def scratchpad_figure(runs, converged_only=True, *, title=None):
    """Fig. 11 in one row: sharpness (×4), encoder and decoder LayerNorm blowup and parameter
    norm vs n (log2 axis: the lengths double), for runs whose autoregressive accuracy exceeds
    0.999 (``converged``). The y axes fit the data (not from 0), so that growth shows; read
    flatness from the tick values and the slopes of ``scratchpad_report``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(SCRATCHPAD_PANELS), figsize=(len(SCRATCHPAD_PANELS) * 3.0, SINGLE_COLUMN[1] + 0.4),
                             layout="constrained")
    for ax, (metric, label) in zip(axes, SCRATCHPAD_PANELS):
        metric_vs_length_ax(runs, metric, ["parity"], ax, converged_only, ylabel=label, log2_lengths=True)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    axes[0].yaxis.set_major_formatter(_four_decimals())
    kept = len(converged(runs)) if converged_only else len(runs)
    _caption(fig, title, f"PARITY with a scratchpad: {kept}/{len(runs)} runs with autoregressive accuracy > 0.999"
             + (" (drawn)" if converged_only else "; all runs drawn") + "; " + BAND.format(""))
    return fig


def scratchpad_report(runs) -> str:
    """Slopes vs n of every Fig. 11 quantity (converged runs) and the converged-run counts."""
    if not len(runs):
        return "no finished runs"
    lines = ["PARITY with a scratchpad: least-squares slope vs length per panel, runs with autoregressive "
             "accuracy > 0.999 only"]
    for metric, label in SCRATCHPAD_PANELS:
        r = next(slopes(runs, metric=metric).itertuples())
        lines.append(f"  {label:26s} slope {r.slope:+.3g} per bit   95% CI [{r.ci_low:+.3g}, {r.ci_high:+.3g}]   "
                     f"{r.runs} runs over {r.lengths} lengths")
    lines.append("converged runs / finished runs per n:")
    lines.append(converged_counts(runs).to_string())
    return "\n".join(lines)


# ---- tradeoff -------------------------------------------------------------------------------------
def tradeoff_ax(runs, ax=None, target=None, color_by="n", converged_only=True, colorbar=True):
    """Fig. 2/9/10: parameter norm vs LayerNorm blowup (log x axis); colour by n (plasma) or target."""
    ax = _axes(ax)
    df = converged(runs) if converged_only else runs
    if target is not None and len(df):
        df = df[df["target"] == target]
    df = df.dropna(subset=["blowup_maxs_prod", "param_norm"]) if len(df) else df
    if not len(df):
        _note(ax, _missing(runs, [target] if target is not None else None, converged_only) or "no run to draw")
    elif color_by == "n":
        from matplotlib.colors import BoundaryNorm
        from matplotlib.ticker import MaxNLocator

        n = df["n"].astype(int)
        # one colour per integer n, and integer ticks on the colour bar
        norm = BoundaryNorm(np.arange(n.min() - 0.5, n.max() + 1.5), ncolors=256)
        sc = ax.scatter(df["blowup_maxs_prod"], df["param_norm"], c=n, cmap="plasma", norm=norm, s=10, alpha=0.8,
                        linewidths=0)
        if colorbar:
            bar = ax.figure.colorbar(sc, ax=ax, label="input length $n$")
            bar.locator = MaxNLocator(integer=True)
    else:
        for t in _targets(df):
            sub = df[df["target"] == t]
            ax.scatter(sub["blowup_maxs_prod"], sub["param_norm"], color=COLORS.get(t), label=LABELS.get(t, t), s=10,
                       alpha=0.8, linewidths=0)
        _legend(ax, "small")
    _log(ax, "x")
    ax.set_xlabel("LayerNorm blowup")
    ax.set_ylabel("parameter norm")
    if target is not None:
        ax.set_title(LABELS.get(target, target), fontsize="small")
    return ax


def tradeoff_figure(runs, converged_only=True, *, title=None):
    """PARITY coloured by n, and every target at once (coloured by target); each dot a run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(2 * SINGLE_COLUMN[0] + 0.8, SINGLE_COLUMN[1] + 0.5), layout="constrained")
    tradeoff_ax(runs, axes[0], target="parity", color_by="n", converged_only=converged_only)
    tradeoff_ax(runs, axes[1], color_by="target", converged_only=converged_only)
    axes[1].set_title("all targets", fontsize="small")
    kept = len(converged(runs)) if converged_only else len(runs)
    _caption(fig, title, f"{CONVERGED if converged_only else 'all finished runs'}: {kept} of {len(runs)} runs, "
                         "each dot a run")
    return fig


# ---- dynamics -------------------------------------------------------------------------------------
DYNAMIC_PANELS = (("measure_loss", "loss", False), ("sharpness", "sharpness (×4)", False),
                  ("blowup_maxs_prod", "LayerNorm blowup", True), ("param_norm", "weight norm", False))


def dynamics_axes(history, weight_decay=None, axes=None, window=None, min_fraction=0.25):
    """Fig. 3 / 12: loss, sharpness (×4), blowup (log) and weight norm against steps after
    convergence (``experiments.aligned_history``). Individual runs faint; the bold line is the
    mean over steps that at least ``min_fraction`` of the runs reach."""
    plt = _plt()
    if axes is None:
        _, axes = plt.subplots(len(DYNAMIC_PANELS), 1, figsize=(SINGLE_COLUMN[0], 1.6 * len(DYNAMIC_PANELS)),
                               sharex=True, layout="constrained")
    df = history
    if weight_decay is not None and len(df):
        df = df[np.isclose(df["weight_decay"].astype(float), weight_decay)]
    df = df.dropna(subset=["steps_after_convergence"]) if len(df) else df
    if window is not None and len(df):
        df = df[(df["steps_after_convergence"] >= window[0]) & (df["steps_after_convergence"] <= window[1])]
    n_runs = df["key"].nunique() if len(df) else 0
    for ax, (metric, label, log) in zip(axes, DYNAMIC_PANELS):
        _style(ax)
        if len(df) and metric in df:
            sub = df.dropna(subset=[metric])
            y = _column(sub, metric)
            for _, g in sub.assign(_y=y).groupby("key"):
                ax.plot(g["steps_after_convergence"], g["_y"], color="#1f77b4",
                        alpha=max(0.05, min(0.5, 3.0 / max(n_runs, 1))), linewidth=0.8)
            agg = sub.assign(_y=y).groupby("steps_after_convergence")["_y"].agg(["mean", "count"])
            agg = agg[agg["count"] >= max(1, math.ceil(min_fraction * n_runs))]
            ax.plot(agg.index, agg["mean"], color="#08306b", linewidth=1.8)
        if not n_runs and ax is axes[0]:
            _note(ax, "no converged run to draw")
        ax.axvline(0, color="red", linestyle="--", linewidth=0.8)
        if log:
            _log(ax, "y")
        ax.set_ylabel(label, fontsize="small")
    axes[-1].set_xlabel("steps after convergence")
    title = f"{n_runs} converged run{'' if n_runs == 1 else 's'}"
    title += f", weight decay {weight_decay:g}" if weight_decay is not None else ""
    axes[0].set_title(title, fontsize="small")
    return axes


#: how to read the dynamics figure
DYNAMICS_CAPTION = ("runs that pass the official filter (eval MSE < 1e-3), aligned at their convergence step "
                    "(measurement loss < 0.01; red line); "
                    "faint: each run, bold: mean over the runs (steps reached by ≥ 25% of them)")


def dynamics_figure(history, weight_decays=None, *, title=None):
    """One column of the four dynamic panels per weight decay."""
    plt = _plt()
    if weight_decays is None:
        weight_decays = sorted(set(history["weight_decay"].astype(float))) if len(history) else [None]
    fig, axes = plt.subplots(len(DYNAMIC_PANELS), len(weight_decays),
                             figsize=(SINGLE_COLUMN[0] * len(weight_decays), 1.6 * len(DYNAMIC_PANELS)),
                             sharex="col", squeeze=False, layout="constrained")
    for j, wd in enumerate(weight_decays):
        dynamics_axes(history, wd, axes=axes[:, j])
    _caption(fig, title, DYNAMICS_CAPTION)
    return fig


# ---- generalization -------------------------------------------------------------------------------
GROUP_COLORS = {("learned", 128): "#9ecae1", ("learned", 256): "#3182bd", ("learned", 512): "#08519c",
                ("learned", 1024): "#08306b", ("random", 256): "#e6550d"}


def _group_label(kind, m):
    return f"{kind} completion, m={m}"


def _partial(df, include_m):
    """Rows of completions from proper subsets (m < 2^n; the paper leaves out m=1024 at n=10)."""
    if include_m is not None:
        return df[df["m"].isin(include_m)]
    return df[df["m"].astype(int) < 2 ** df["n"].astype(int)]


def _scatter_groups(ax, df, x, y, converged_only, show_unconverged):
    """One colour per (kind, m); converged runs filled, the others hollow (if shown)."""
    ok = df["converged"].astype(bool) & (df["status"] == "ok") if len(df) else df.index == df.index
    for (kind, m), g in df.groupby(["kind", "m"]):
        color = GROUP_COLORS.get((kind, m))
        good = g[ok.loc[g.index]]
        if len(good):
            ax.scatter(good[x], good[y], s=10, alpha=0.8, linewidths=0, color=color, label=_group_label(kind, m))
        bad = g[~ok.loc[g.index]]
        if len(bad) and (show_unconverged or not converged_only):
            ax.scatter(bad[x], bad[y], s=12, alpha=0.8, facecolors="none", edgecolors=color, linewidths=0.8,
                       label=_group_label(kind, m) + " (not converged)")


def generalization_ax(refits, ax=None, converged_only=True, include_m=None, show_unconverged=False):
    """Fig. 4: sharpness (×4) of the refitted transformer vs the average sensitivity of its
    target function, per completion group (m = 2^n, e.g. 1024, excluded as in the paper).
    Only converged refits count (filled); ``show_unconverged`` adds the others hollow."""
    ax = _axes(ax)
    df = _partial(refits, include_m) if len(refits) else refits
    if len(df):
        df = df.assign(_sharp4=4 * df["sharpness"].astype(float))
        _scatter_groups(ax, df, "average_sensitivity", "_sharp4", converged_only, show_unconverged)
        _legend(ax, "x-small")
    if not ax.collections:
        _note(ax, "no converged refit to draw" if len(df) else "no refit runs")
    ax.set_xlabel("average sensitivity of the function")
    ax.set_ylabel("sharpness (×4)")
    return ax


def sensitivity_hist_ax(manifest, ax=None, include_m=None):
    """Distribution of average sensitivity of learned vs random completions (the jointplot's margin)."""
    ax = _axes(ax)
    if len(manifest):
        df = _partial(manifest, include_m)
        bins = np.linspace(0, max(6.0, float(df["average_sensitivity"].max()) + 0.1), 40)
        for (kind, m), g in df.groupby(["kind", "m"]):
            ax.hist(g["average_sensitivity"], bins=bins, alpha=0.6, color=GROUP_COLORS.get((kind, m)),
                    label=_group_label(kind, m))
        _legend(ax, "x-small")
    ax.set_xlabel("average sensitivity")
    ax.set_ylabel("functions")
    return ax


def train_sharpness_ax(refits, ax=None, converged_only=True, include_m=None, show_unconverged=False):
    """Fig. 15, with the official plot's axes: sharpness (×4) on x, sharpness on the parent's training set
    (not ×4, as the official plot) on y, for learned completions only (a random completion has no
    training-set sharpness, and the official plot leaves random functions out too)."""
    ax = _axes(ax)
    df = _partial(refits, include_m) if len(refits) else refits
    if len(df) and "train_sharpness" in df:
        df = df[df["kind"] == "learned"]
        df = df.assign(_train=df["train_sharpness"].astype(float), _sharp4=4 * df["sharpness"].astype(float))
        _scatter_groups(ax, df.dropna(subset=["_train"]), "_sharp4", "_train", converged_only, show_unconverged)
        _legend(ax, "x-small")
    if not ax.collections:
        _note(ax, "no learned completion's refit to draw")
    ax.set_xlabel("sharpness (×4)")
    ax.set_ylabel("training set sharpness (not ×4)")
    return ax


def generalization_figure(refits, manifest, show_unconverged=None, *, title=None):
    """The sensitivity of learned vs random completions, Fig. 4 and Fig. 15, with one legend for
    the three panels. Unconverged refits are drawn hollow when none converged
    (``show_unconverged=None``), e.g. with a training budget too small for the MSE filter."""
    plt = _plt()
    if show_unconverged is None:
        show_unconverged = not len(converged(refits))
    fig, axes = plt.subplots(1, 3, figsize=(3 * SINGLE_COLUMN[0], SINGLE_COLUMN[1] + 0.9), layout="constrained")
    sensitivity_hist_ax(manifest, axes[0])
    generalization_ax(refits, axes[1], show_unconverged=show_unconverged)
    train_sharpness_ax(refits, axes[2], show_unconverged=show_unconverged)
    _figure_legend(fig, axes, ncols=3)
    kept = len(converged(refits))
    drawn = (f"refits: {kept} of {len(refits)} converged (eval MSE < 1e-3), drawn filled"
             + ("; the others hollow" if show_unconverged else ""))
    _caption(fig, title, f"left: every completion; middle and right: {drawn}, each dot a refit (m = 2^n left out, "
                         "as in the paper); right: learned completions only")
    return fig


# ---- length generalisation ------------------------------------------------------------------------
#: a colour per positional encoding; one the engine adds later gets the next of ``_SPARE_COLORS``
POSITIONAL_COLORS = {"concat": "#1f77b4", "add": "#ff7f0e", "sinusoidal": "#2ca02c", "none": "#d62728",
                     "rope": "#9467bd"}
_SPARE_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf")
#: line styles and markers cycled over the encodings, so that lines lying on each other (all at accuracy 1)
#: still show which encodings are there
_POSITIONAL_LINES = (("-", "o"), ("--", "s"), ("-.", "^"), ((0, (1, 1.2)), "D"), ((0, (5, 1.5, 1, 1.5, 1, 1.5)), "v"))
#: the shading of the trained lengths and the line at accuracy 0.5
TRAINED_SHADE, HALF_LINE = "#e6e6e6", dict(color="#777777", linestyle="-", linewidth=0.7)


def _positionals(df):
    """Encodings present in ``df``, in the engine's order, then any others sorted."""
    from .sweep.config import POSITIONALS

    present = set(df["positional"])
    return [p for p in POSITIONALS if p in present] + sorted(present - set(POSITIONALS))


def _positional_color(name, order):
    spare = [p for p in order if p not in POSITIONAL_COLORS]
    return POSITIONAL_COLORS.get(name) or _SPARE_COLORS[spare.index(name) % len(_SPARE_COLORS)]


def _trained_spans(lengths):
    """Runs of consecutive trained lengths as (first, last) pairs: each is shaded from first-0.5 to last+0.5."""
    spans = []
    for k in sorted(set(lengths)):
        if spans and k == spans[-1][1] + 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    return [tuple(s) for s in spans]


def length_generalization_ax(long_form, ax=None, metric="eval_accuracy", target=None):
    """One target's accuracy by evaluation length, one line per positional encoding (runs stored without
    one used the paper's, "concat"): mean ± 2 SD across seeds, the band clipped to [0, 1] for accuracy;
    the trained lengths shaded, a thin grey line at accuracy 0.5. ``target``: which target of ``long_form``
    (needed when it holds several)."""
    ax = _axes(ax)
    df = long_form
    if len(df) and "positional" not in df:
        df = df.assign(positional="concat")
    if len(df):
        targets = _targets(df)
        if target is None and len(targets) > 1:
            raise ValueError(f"long_form holds several targets {targets}: pass target= (or use "
                             f"length_generalization_figure for a panel per target)")
        target = targets[0] if target is None else target
        df = df[df["target"] == target]
    limits = (0.0, 1.0) if metric == "eval_accuracy" else (0.0, math.inf)
    if len(df):
        order = _positionals(df)
        for i, p in enumerate(order):
            linestyle, marker = _POSITIONAL_LINES[i % len(_POSITIONAL_LINES)]
            _mean_band(ax, df[df["positional"] == p].rename(columns={"length": "n"}), "n", metric,
                       _positional_color(p, order), p, limits=limits, linestyle=linestyle, marker=marker)
        for first, last in _trained_spans(df.loc[df["trained"], "length"]):
            ax.axvspan(first - 0.5, last + 0.5, color=TRAINED_SHADE, zorder=0, label="trained lengths")
        if metric == "eval_accuracy":
            ax.axhline(0.5, zorder=1, label="accuracy 0.5", **HALF_LINE)
            ax.set_ylim(-0.03, 1.03)
        _legend(ax, "x-small")
    else:
        _note(ax, "no finished runs" if target is None else f"no finished runs of {LABELS.get(target, target)}")
    if target is not None:
        ax.set_title(LABELS.get(target, target), fontsize="medium")
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("evaluation length $n$")
    ax.set_ylabel("accuracy" if metric == "eval_accuracy" else metric)
    return ax


def length_generalization_figure(long_form, *, title=None, metric="eval_accuracy"):
    """A panel per target (``length_generalization_ax``), one legend for the encodings, the trained lengths
    and the 0.5 line below them, and the caption (band, the trained lengths)."""
    plt = _plt()
    targets = _targets(long_form) or [None]
    fig, axes = plt.subplots(1, len(targets), figsize=(max(SINGLE_COLUMN[0] + 0.5, 2.8 * len(targets)),
                                                       SINGLE_COLUMN[1] + 0.9),
                             layout="constrained", sharey=True, squeeze=False)
    for ax, target in zip(axes[0], targets):
        length_generalization_ax(long_form, ax, metric, target)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    _figure_legend(fig, axes[0], ncols=8)  # one row: the encodings, the shading, the 0.5 line
    trained = sorted(set(long_form.loc[long_form["trained"], "length"])) if len(long_form) else []
    spans = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in _trained_spans(trained))
    band = BAND.format(" clipped to [0,\u00a01]" if metric == "eval_accuracy" else "")  # no line break in [0, 1]
    trained_note = f"; grey: the trained lengths ({spans}); a line per positional encoding" if spans else ""
    _caption(fig, title, band + trained_note)
    return fig


# ---- sensitivity at initialisation ------------------------------------------------------------------
INIT_COLORS = {"pytorch": "#1f77b4", "gaussian": "#ff7f0e", "uniform": "#2ca02c", "xavier_uniform": "#d62728",
               "xavier_normal": "#9467bd"}


def init_sensitivity_axes(runs, axes=None):
    """Average sensitivity relative to a random function's n/2, and the fraction of
    zero-sensitivity inputs K_0 / 2^n, vs n per initialisation (mean ± 2 SD + runs; the bands
    clipped to the ranges the quantities can take, [0, 2] and [0, 1])."""
    plt = _plt()
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(2 * SINGLE_COLUMN[0], SINGLE_COLUMN[1]), layout="constrained")
    df = runs.assign(relative=runs["model_as"] / (runs["n"] / 2)) if len(runs) else runs
    panels = (("relative", "average sensitivity / (n/2)", (0.0, 2.0)),
              ("model_k0_fraction", "zero-sensitivity inputs $K_0/2^n$", (0.0, 1.0)))
    for ax, (metric, label, limits) in zip(axes, panels):
        _style(ax)
        if len(df):
            for init in [i for i in INIT_COLORS if i in set(df["init"])]:
                _mean_band(ax, df[df["init"] == init], "n", metric, INIT_COLORS[init], init, limits=limits)
        _integer_ticks(ax.xaxis)
        ax.set_xlabel("input length $n$")
        ax.set_ylabel(label)
    _legend(axes[0], "x-small")
    return axes


def init_sensitivity_figure(runs, *, title=None):
    """``init_sensitivity_axes`` with one legend for both panels and its caption."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(2 * SINGLE_COLUMN[0], SINGLE_COLUMN[1] + 0.8), layout="constrained")
    init_sensitivity_axes(runs, axes)
    _figure_legend(fig, axes, ncols=5)
    pooled = [f"{k}={','.join(map(str, sorted(set(runs[k]))))}" for k in ("d_model", "n_layers")
              if len(runs) and k in runs and runs[k].nunique() > 1]
    band = BAND.format((" and " + ", ".join(pooled) if pooled else "") + ", clipped to the possible range")
    _caption(fig, title, "untrained models, per initialisation; " + band)
    return fig


# ---- the model's Fourier spectrum during training --------------------------------------------------
#: the spectrum figure's last rows, after the spectrum, loss and sensitivity: (column, y label, log axis)
SPECTRUM_PANELS = (("sharpness", "sharpness (×4)", False), ("blowup_maxs_prod", "LayerNorm blowup", True))


def _faint_and_mean(ax, df, metric, color, n_runs, linestyle="-", geometric=False):
    """Each run faint, the mean over runs bold (geometric mean on log axes), against the step."""
    sub = df.dropna(subset=[metric])
    y = _column(sub, metric)
    for _, g in sub.assign(_y=y).groupby("key"):
        ax.plot(g["step"], g["_y"], color=color, alpha=max(0.1, min(0.4, 2.0 / max(n_runs, 1))), linewidth=0.7,
                linestyle=linestyle)
    values = np.log(y.clip(lower=1e-300)) if geometric else y
    mean = pd.DataFrame({"step": sub["step"], "y": values}).groupby("step")["y"].mean()
    ax.plot(mean.index, np.exp(mean.values) if geometric else mean.values, color=color, linewidth=1.6,
            linestyle=linestyle)


def spectrum_share_ax(history, ax=None):
    """Each degree's share of the Fourier weight (``fourier_weight_k`` / their sum) against the step, stacked
    (degree 0 at the bottom, viridis), averaged over the runs at each step: any history with the spectrum
    columns (``Measure(spectrum=True)``'s, or a store's)."""
    from matplotlib import colormaps

    ax = _axes(ax)
    n = max(int(c.rsplit("_", 1)[1]) for c in history if c.startswith("fourier_weight_") and c[-1].isdigit())
    cols = [f"fourier_weight_{k}" for k in range(n + 1)]
    df = history.dropna(subset=cols)
    w = df[cols].to_numpy(float)
    share = pd.DataFrame(w / w.sum(axis=1, keepdims=True), columns=cols).assign(step=df["step"].to_numpy())
    mean_share = share.groupby("step").mean()
    cmap = colormaps["viridis"]
    ax.stackplot(mean_share.index, mean_share.to_numpy().T, colors=[cmap(k / max(n, 1)) for k in range(n + 1)],
                 linewidth=0)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("share of Fourier\nweight per degree", fontsize="small")
    return ax


def spectrum_axes(history, target, target_weights, n, axes, runs_label=None):
    """One target's column against the training step (log axis): the share of the Fourier weight per degree
    (stacked, mean over runs), the loss (black) and the weight at the target's heaviest degree (log), the
    average sensitivity (real-valued solid, thresholded dashed, the target's dotted), sharpness (×4) and
    LayerNorm blowup (log); a red line at the runs' median convergence step (loss < 0.01)."""
    df = history[history["target"] == target].dropna(subset=["fourier_weight_0"]) if len(history) else history
    n_runs = df["key"].nunique() if len(df) else 0
    for ax in axes:
        _style(ax)
    label = runs_label or f"{n_runs} run{'' if n_runs == 1 else 's'}"
    axes[0].set_title(f"{LABELS.get(target, target)} ({label})", fontsize="small")
    if not n_runs:
        for ax in axes:
            _note(ax, "no run to draw")
        return axes
    spectrum_share_ax(df, axes[0]).set_xlabel("")  # the bottom row says it

    color = COLORS.get(target, "#1f77b4")
    k = int(np.argmax(target_weights))
    _faint_and_mean(axes[1], df, "measure_loss", "black", n_runs, geometric=True)
    _faint_and_mean(axes[1], df, f"fourier_weight_{k}", color, n_runs, geometric=True)
    _log(axes[1], "y")
    axes[1].set_ylabel(f"loss, $W_{{{k}}}$", fontsize="small")

    _faint_and_mean(axes[2], df, "model_as_real", color, n_runs)
    _faint_and_mean(axes[2], df, "model_as", color, n_runs, linestyle="--")
    axes[2].axhline(float(np.dot(np.arange(n + 1), target_weights)), color="#555555", linewidth=0.9, linestyle=":")
    axes[2].set_ylabel("average sensitivity", fontsize="small")
    for ax, (metric, label, log) in zip(axes[3:], SPECTRUM_PANELS):
        if metric in df:
            _faint_and_mean(ax, df, metric, color, n_runs, geometric=log)
        if log:
            _log(ax, "y")
        ax.set_ylabel(label, fontsize="small")
    below = df[df["measure_loss"] < 0.01].groupby("key")["step"].min()
    for ax in axes:
        if len(below):
            ax.axvline(float(np.median(below)), color="red", linestyle="--", linewidth=0.8)
        _log(ax, "x")
    axes[-1].set_xlabel("training step")
    return axes


def _spectrum_legend(fig):
    """What the line styles mean, once for every column (the colours are the targets')."""
    from matplotlib.lines import Line2D

    entries = [(dict(color="black"), "loss (MSE)"), (dict(color="#666666"), "$W_k$ / real-valued output"),
               (dict(color="#666666", linestyle="--"), "thresholded predictions"),
               (dict(color="#555555", linestyle=":"), "the target's average sensitivity"),
               (dict(color="red", linestyle="--", linewidth=0.8), "median convergence step")]
    fig.legend([Line2D([], [], **style) for style, _ in entries], [text for _, text in entries],
               loc="outside lower center", frameon=False, fontsize="small", ncols=len(entries))


def spectrum_figure(history, target_spectra, n, runs_labels=None, *, title=None):
    """One column per target of ``spectrum_axes``, a colour bar for the degrees, one legend and the caption.
    ``target_spectra``: target -> its own weight per degree (the heaviest degree and the reference line);
    ``runs_labels``: target -> the text after its name (e.g. "4/6 runs converged")."""
    plt = _plt()
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm

    targets = list(target_spectra)
    rows = 3 + len(SPECTRUM_PANELS)
    fig, axes = plt.subplots(rows, len(targets), figsize=(3.2 * len(targets) + 0.8, 1.55 * rows + 1.2),
                             sharex=True, squeeze=False, layout="constrained")
    for j, t in enumerate(targets):
        spectrum_axes(history, t, np.asarray(target_spectra[t]), n, axes[:, j], (runs_labels or {}).get(t))
    norm = BoundaryNorm(np.arange(-0.5, n + 1.5), ncolors=256)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormaps["viridis"]), ax=axes[0, :].tolist(), pad=0.01,
                       aspect=12)
    bar.set_label("degree $k$", fontsize="small")
    bar.set_ticks(sorted({0, n // 2, n}))
    _spectrum_legend(fig)
    _caption(fig, title, f"n={n}; top: mean over runs of each degree's share of the Fourier weight of the model's "
                         "real-valued output (±1 scale); below: each run faint, the mean over runs bold (geometric "
                         "on log axes); $W_k$: the weight at the target's heaviest degree k")
    return fig
