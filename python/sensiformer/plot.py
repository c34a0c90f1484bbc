"""What every experiment's figure shares (matplotlib, imported lazily): styling, captions, the mean ± 2 SD
band, the convergence filter, the metric-vs-length panel and the regression slopes.

Each experiment draws its own figure and writes its own report in its module under ``experiments/``
(``experiments/scaling.py`` has ``scaling_figure`` and ``scaling_report``, ...), from these helpers. Their
public names stay importable from here (``plot.scaling_figure``, ``plot.dynamics_axes``, ...): ``MOVED``
says where each lives, and the module loads it on first use, so importing ``plot`` imports no experiment.

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

import importlib
import math

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


def metric_vs_length_ax(runs, *, metric="sharpness", targets=None, ax=None, converged_only=True, log=False,
                        ylabel=None, log2_lengths=False):
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


def _four_decimals():
    from matplotlib.ticker import FormatStrFormatter

    return FormatStrFormatter("%.4f")


# ---- regression slopes and run counts (the scaling and scratchpad reports) --------------------
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


def slopes(runs, *, metric="sharpness", x="n", converged_only=True, level=0.95) -> pd.DataFrame:
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


def converged_counts(runs) -> pd.DataFrame:
    """Converged runs / finished runs per (target, n), as strings "k/m"."""
    if not len(runs):
        return pd.DataFrame()
    ok = runs["converged"].astype(bool) & (runs["status"] == "ok")
    table = runs.assign(ok=ok).groupby(["target", "n"])["ok"].agg(["sum", "count"])
    text = table.apply(lambda r: f"{int(r['sum'])}/{int(r['count'])}", axis=1).unstack("n")
    order = [t for t in COLORS if t in text.index] + [t for t in text.index if t not in COLORS]
    return text.loc[order]


# ---- the experiments' figures and reports, under the names they had here ------------------------------
#: public name -> the experiment module (``sensiformer.experiments.<module>``) that defines it
MOVED = {
    **dict.fromkeys(("sharpness_vs_length_ax", "blowup_vs_length_ax", "norm_vs_length_ax", "scaling_figure",
                     "scaling_report", "parity_verdict"), "scaling"),
    **dict.fromkeys(("SCRATCHPAD_PANELS", "scratchpad_figure", "scratchpad_report"), "scratchpad"),
    **dict.fromkeys(("tradeoff_ax", "tradeoff_figure", "frontier_shift"), "tradeoff"),
    **dict.fromkeys(("DYNAMIC_PANELS", "DYNAMICS_CAPTION", "dynamics_axes", "dynamics_figure"), "dynamics"),
    **dict.fromkeys(("GROUP_COLORS", "generalization_ax", "sensitivity_hist_ax", "train_sharpness_ax",
                     "generalization_figure"), "generalization"),
    **dict.fromkeys(("POSITIONAL_COLORS", "TRAINED_SHADE", "HALF_LINE", "length_generalization_ax",
                     "length_generalization_figure"), "length_generalization"),
    **dict.fromkeys(("INIT_COLORS", "init_sensitivity_axes", "init_sensitivity_figure"), "init_sensitivity"),
    **dict.fromkeys(("SPECTRUM_PANELS", "spectrum_share_ax", "spectrum_axes", "spectrum_figure"), "spectrum"),
}


def __getattr__(name):
    # loaded on first use: the experiment modules import this one, so this one must not import them
    if name in MOVED:
        return getattr(importlib.import_module(f"sensiformer.experiments.{MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *MOVED])
