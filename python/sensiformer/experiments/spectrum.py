"""Beyond the paper: the model function's Fourier spectrum during training, next to loss, sharpness and blowup.

Every run probes, every ``dynamic_every`` steps, the weight per degree of the model's real-valued output
(``fourier_weight_0 .. _n``: exact for n <= 20), its average sensitivity (real-valued and thresholded),
the loss, sharpness, LayerNorm blowup and parameter norm (``Measure(spectrum=True)``). The targets are
PARITY, MAJORITY and a sparse parity: the figure shows the weight moving between degrees, and the
"hidden progress" of a sensitive function: while the loss sits on its plateau, the weight at the
target's degree grows by orders of magnitude.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..plot import COLORS, LABELS, _axes, _caption, _column, _log, _note, _plt, _style, converged
from ..sweep.config import RunConfig
from ._base import PAPER, Experiment, Stage, resolve, run_fields
from .dynamics import CONVERGENCE_LOSS

TARGETS = ("parity", "majority", "sparse_parity")
#: a measured step is on the loss plateau until the loss first falls below this fraction of the best constant
#: predictor's loss (the target's variance)
PLATEAU_FRACTION = 0.9

_SPEC = dict(PAPER, targets=TARGETS, measure=False, dynamic_batches=1, spectrum_samples=1024)
PRESETS = {
    # the paper's model and optimiser (d=128, B=1024, lr 3e-4, wd 0.1) and its dynamics probes (every 100
    # steps, R=500 on one batch) at n=16: the exact spectrum's 2^16 forward passes cost about a tenth of the
    # R=500 sharpness (2^20 would cost ~10 CPU-minutes per probe); a cluster preset
    "paper": dict(_SPEC, n=16, sparse_bits=(2, 7, 13), seeds=tuple(range(10)), weight_decays=(0.1,), steps=20_000,
                  log_every=100, dynamic_every=100, dynamic_repeats=500, eval_batches=1000),
    # n=8, d=32 (the dynamics quick preset's PARITY model), 8 seeds; probes every 10 steps so that MAJORITY's
    # fit within ~100 steps and PARITY's plateau both show on the log step axis. Measured 2026-12-05: 24 runs,
    # 109-113 CPU-seconds (1.5-1.7 min on a 2-core AVX-512 host); 6/8 PARITY runs converge (at n=10 and 12, 2/6 and
    # 1/6 did in 3000-5000 steps), and what the report shows is in the README
    "quick": dict(_SPEC, n=8, sparse_bits=(1, 4, 6), seeds=tuple(range(8)), weight_decays=(0.1,), steps=3000,
                  d_model=32, batch_size=128, lr=2e-3, log_every=10, dynamic_every=10, dynamic_repeats=20,
                  eval_batches=20),
    # ci: 600 steps so that PARITY converges too and every panel has its curves
    "ci": dict(_SPEC, n=5, sparse_bits=(0, 2), seeds=(0,), weight_decays=(0.1,), steps=600, d_model=16,
               batch_size=64, lr=3e-3, log_every=50, dynamic_every=50, dynamic_repeats=4, eval_batches=4),
}


def spectrum(preset: str = "ci", **overrides) -> Experiment:
    """PARITY, MAJORITY and a sparse parity trained with the spectrum probed every ``dynamic_every`` steps.

    Parameters
    ----------
    preset : {"ci", "quick", "paper"}
        "paper": the paper's model, training and dynamics-probe settings at n=16 (exact spectrum; 10 seeds,
        20k steps);
        "quick": n=8, d=32, 8 seeds, 3000 steps: 24 runs, 109-113 CPU-seconds (1.5-1.7 min measured on a 2-core
        AVX-512 host; the README says what it shows); "ci" runs every code path in seconds.
    **overrides
        ``targets``, ``n``, ``sparse_bits`` (0-based positions of the sparse parity), ``seeds``,
        ``weight_decays``, ``spectrum_samples`` (Monte-Carlo inputs beyond n=20) and the model, training
        and probe settings (``dynamic_every``, ``dynamic_repeats``, ...).
    """
    params, changed = resolve("spectrum", PRESETS, preset, overrides)
    fields = run_fields(params)
    fields.pop("weight_decay")
    fields["dynamics"] = dataclasses.replace(fields["dynamics"], spectrum=True)

    def build(store=None):
        return [RunConfig(target=t, target_bits=params["sparse_bits"] if t == "sparse_parity" else (), n=params["n"],
                          seed=s, weight_decay=wd, **fields, tags=dict(experiment="spectrum"))
                for t in params["targets"] for s in params["seeds"] for wd in params["weight_decays"]]

    return Experiment(name="spectrum", preset=preset, params=params, overrides=changed, stages=[Stage("train", build)],
                      figures="beyond the paper", _plot=_figure, _report=_report)


def target_spectra(params) -> dict:
    """target -> its own Fourier weight per degree (exact, on the +-1 scale) at the experiment's n."""
    from .. import analysis, targets

    n = params["n"]
    make = {"parity": lambda: targets.Parity(n), "majority": lambda: targets.Majority(n),
            "first": lambda: targets.First(n), "mean": lambda: targets.Mean(n),
            "sparse_parity": lambda: targets.SparseParity(n, params["sparse_bits"])}
    return {t: analysis.degree_spectrum(make[t]().truth_table()) for t in params["targets"] if t in make}


def weights(history: pd.DataFrame, n: int) -> np.ndarray:
    """(rows, n + 1) Fourier weight per degree of the history rows."""
    return history[[f"fourier_weight_{k}" for k in range(n + 1)]].to_numpy(dtype=float)


def constant_loss(target_weights) -> float:
    """The MSE (on the {0,1} scale) of the best constant prediction, the target's variance: its Fourier
    weight above degree 0, divided by 4."""
    return float(np.sum(target_weights[1:]) / 4)


def hidden_progress(history: pd.DataFrame, spectra: dict, n: int) -> pd.DataFrame:
    """Per run: the loss plateau (the measured steps before the loss first falls below ``PLATEAU_FRACTION``
    times the best constant predictor's) and how much the weight at the target's heaviest degree k grew
    over it; ``spectra``: target -> its own weight per degree.

    Columns: key, target, seed, degree (k), first_step, plateau_end (its last step; NaN when the first
    measurement is already below), weight_first, weight_at_plateau_end, growth (their ratio),
    share_at_plateau_end (k's fraction of the total weight), convergence_step (first step with loss < 0.01;
    NaN if never), final_weight, final_share.
    """
    columns = ["key", "target", "seed", "degree", "first_step", "plateau_end", "weight_first",
               "weight_at_plateau_end", "growth", "share_at_plateau_end", "convergence_step", "final_weight",
               "final_share"]
    probed = history.dropna(subset=["fourier_weight_0", "measure_loss"]) if len(history) else history
    rows = []
    for key, run in probed.groupby("key") if len(probed) else ():
        target = run["target"].iloc[0]
        if target not in spectra:
            continue
        run = run.sort_values("step")
        k = int(np.argmax(spectra[target]))
        w = weights(run, n)
        share = w[:, k] / w.sum(axis=1)
        loss, steps = run["measure_loss"].to_numpy(float), run["step"].to_numpy()
        left = np.flatnonzero(loss < PLATEAU_FRACTION * constant_loss(spectra[target]))
        end = (left[0] if left.size else len(loss)) - 1  # the last step before the loss left the plateau
        conv = np.flatnonzero(loss < CONVERGENCE_LOSS)
        on = end >= 0
        rows.append(dict(key=key, target=target, seed=run["seed"].iloc[0], degree=k, first_step=steps[0],
                         plateau_end=steps[end] if on else np.nan, weight_first=w[0, k],
                         weight_at_plateau_end=w[end, k] if on else np.nan,
                         growth=w[end, k] / w[0, k] if on else np.nan,
                         share_at_plateau_end=share[end] if on else np.nan,
                         convergence_step=float(steps[conv[0]]) if conv.size else np.nan,
                         final_weight=w[-1, k], final_share=share[-1]))
    return pd.DataFrame(rows, columns=columns)


def converged_history(exp, store):
    """The histories of the runs that pass the paper's filter (finished, eval MSE < 1e-3), and per target
    the text "k/m runs converged"."""
    runs, hist = exp.results(store), exp.history(store)
    kept = set(converged(runs)["key"])
    labels = {t: f"{int(runs[runs['target'] == t]['key'].isin(kept).sum())}/{int((runs['target'] == t).sum())} "
                 "runs converged" for t in exp.params["targets"]} if len(runs) else {}
    return (hist[hist["key"].isin(kept)] if len(hist) else hist), labels


def _figure(exp, store, **kwargs):
    hist, labels = converged_history(exp, store)
    return spectrum_figure(hist, target_spectra(exp.params), n=exp.params["n"], runs_labels=labels, **kwargs)


def _report(exp, store):
    runs, hist = exp.results(store), exp.history(store)
    if not len(hist):
        return f"{exp.sweep}: no finished runs"
    n = exp.params["n"]
    spectra = target_spectra(exp.params)
    table = hidden_progress(hist, spectra, n)
    table["converged"] = table["key"].isin(set(converged(runs)["key"]))
    lines = [f"{exp.sweep}: {len(runs)} finished runs, n={n}; per target, median [min, max] over its runs",
             f"W_k: the model's Fourier weight at the target's heaviest degree k (+-1 scale); plateau: the measured "
             f"steps before the loss first fell below {PLATEAU_FRACTION:g} x the best constant predictor's"]
    for target in [t for t in exp.params["targets"] if t in set(table["target"])]:
        g = table[table["target"] == target]
        ok, failed = g[g["converged"]], g[~g["converged"]]
        k = int(g["degree"].iloc[0])
        lines.append(f"  {LABELS.get(target, target)} (k={k}, the target's share {_pct(spectra[target][k])}): "
                     f"{len(ok)}/{len(g)} runs converged (eval MSE < 1e-3)")
        if len(ok):
            lines.append(f"    converged runs: loss < {CONVERGENCE_LOSS} at step "
                         f"{_spread(ok['convergence_step'], '.0f')}")
            plateau = ok.dropna(subset=["plateau_end"])
            if len(plateau):
                lines.append(f"    {len(plateau)} with a plateau, until step {_spread(plateau['plateau_end'], '.0f')}: "
                             f"over it W_k grew x{_spread(plateau['growth'], '.3g')}, from "
                             f"{_spread(plateau['weight_first'], '.1e')} to "
                             f"{_spread(plateau['weight_at_plateau_end'], '.1e')} "
                             f"({_spread(100 * plateau['share_at_plateau_end'], '.1f')}% of the weight)")
            if len(plateau) < len(ok):
                lines.append(f"    {len(ok) - len(plateau)} without a plateau: the loss was already below it at the "
                             f"first measurement (step {ok['first_step'].min():.0f})")
            lines.append(f"    at the end: {_spread(100 * ok['final_share'], '.1f')}% of the weight at degree k")
        if len(failed):
            lines.append(f"    runs that did not converge: W_k from {_spread(failed['weight_first'], '.1e')} to "
                         f"{_spread(failed['final_weight'], '.1e')} at the end")
    return "\n".join(lines)


def _spread(values, fmt):
    """'median [min, max]' of ``values``."""
    v = np.asarray(values, float)
    return f"{np.median(v):{fmt}} [{v.min():{fmt}}, {v.max():{fmt}}]"


def _pct(v):
    return f"{100 * v:.1f}%"


# ---- figure and report ----------------------------------------------------------------------------
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


def spectrum_share_ax(history, *, ax=None):
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


def spectrum_axes(history, *, target, target_weights, n, axes, runs_label=None):
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
    spectrum_share_ax(df, ax=axes[0]).set_xlabel("")  # the bottom row says it

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


def spectrum_figure(history, target_spectra, *, n, runs_labels=None, title=None):
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
        spectrum_axes(history, target=t, target_weights=np.asarray(target_spectra[t]), n=n, axes=axes[:, j],
                      runs_label=(runs_labels or {}).get(t))
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
