"""Figure 1 and 5–8: sharpness, LayerNorm blowup and parameter norm against input length."""

from __future__ import annotations

import math

import numpy as np

from ..plot import (BAND, CONVERGED, LABELS, SINGLE_COLUMN, _caption, _figure_legend, _four_decimals, _missing, _plt,
                    _targets, converged_counts, metric_vs_length_ax, slopes)
from ..sweep.config import RunConfig
from ._base import PAPER, Experiment, Stage, resolve, run_fields

TARGETS = ("parity", "majority", "first", "mean")
#: sweeps/length_scaling_2.yaml
LONG_LENGTHS = (4, 31, 57, 84, 111, 138, 164, 191, 218, 245, 271, 298, 325, 352, 378, 405, 432, 459, 485, 512)


PRESETS = {
    "short": {
        # sweeps/length_scaling_1.yaml: n 4..30 x seed 0..9 x 4 targets, default settings = 1080 runs
        "paper": dict(PAPER, targets=TARGETS, lengths=tuple(range(4, 31)), seeds=tuple(range(10))),
        # measured on the 2-core machine (README quick start); PARITY fits up to n=8 in most seeds
        # with d=32, B=128, lr 2e-3, 2000 steps; R=100 noise draws (the paper: 10, averaged over
        # 1000 batches) keep the per-run sharpness noise small
        "quick": dict(PAPER, targets=TARGETS, lengths=(4, 5, 6, 7, 8), seeds=tuple(range(8)), d_model=32,
                      batch_size=128, lr=2e-3, steps=2000, log_every=250, eval_batches=50, measure_batches=8,
                      sharpness_repeats=100),
        # ci: 600 steps, so that PARITY converges at every length too and the figure has its slope
        "ci": dict(PAPER, targets=TARGETS, lengths=(3, 4, 5), seeds=(0,), d_model=16, batch_size=64, lr=3e-3,
                   steps=600, log_every=100, eval_batches=4, measure_batches=2),
    },
    "long": {
        # sweeps/length_scaling_2.yaml: 20 lengths up to 512 x seed 0..9 x 3 targets, d=4, B=128 = 600 runs
        "paper": dict(PAPER, targets=("majority", "first", "mean"), lengths=LONG_LENGTHS, seeds=tuple(range(10)),
                      d_model=4, batch_size=128),
        "quick": dict(PAPER, targets=("majority", "first", "mean"), lengths=(4, 32, 64, 128), seeds=(0, 1, 2),
                      d_model=4, batch_size=128, lr=3e-3, steps=2000, log_every=250, eval_batches=20,
                      measure_batches=8),
        "ci": dict(PAPER, targets=("majority", "first"), lengths=(4, 24), seeds=(0,), d_model=4, batch_size=32,
                   lr=3e-3, steps=100, log_every=50, eval_batches=2, measure_batches=2),
    },
}


def scaling(preset: str = "ci", *, variant: str = "short", **overrides) -> Experiment:
    """Sharpness (×4 in plots), LN blowup (official ``maxs_prod``) and parameter norm vs length.

    Parameters
    ----------
    preset : {"ci", "quick", "paper"}
        "paper" is the official grid exactly (variant "short": ``length_scaling_1``, 1080 runs
        of the d=128 model, 10k steps; variant "long": ``length_scaling_2``, 600 runs of the
        d=4 model up to n=512). "quick" shows PARITY's sharpness rising with n, unlike the
        other targets (160 runs, 166 CPU-seconds: 1.4 minutes measured on 2 idle cores of an
        AVX-512 host); "ci" runs every code path in seconds.
    variant : {"short", "long"}
    **overrides
        Any parameter: ``targets``, ``lengths``, ``seeds``, ``d_model``, ``n_heads``,
        ``n_layers``, ``batch_size``, ``lr``, ``weight_decay``, ``steps``, ``log_every``,
        ``eval_batches``, ``measure_batches``, ``sharpness_sigma``, ``sharpness_repeats``,
        ``dtype``, ``blowup_definition``.
    """
    if variant not in PRESETS:
        raise ValueError(f"variant must be 'short' or 'long', got {variant!r}")
    params, changed = resolve("scaling", PRESETS[variant], preset, overrides)

    def build(store=None):
        # the official sweep's grid order: n, seed, target (wandb enumerates the product)
        return [RunConfig(target=t, n=n, seed=s, **run_fields(params),
                          tags=dict(experiment="scaling", variant=variant))
                for n in params["lengths"] for s in params["seeds"] for t in params["targets"]]

    return Experiment(name="scaling", preset=preset, params=params, overrides=changed, stages=[Stage("train", build)],
                      figures="Fig. 1, 5-8", variant=None if variant == "short" else variant,
                      _plot=_figure, _report=_report)


def _figure(exp, store, **kwargs):
    return scaling_figure(exp.results(store), **kwargs)


def _report(exp, store):
    return scaling_report(exp.results(store))


# ---- figure and report ----------------------------------------------------------------------------
def sharpness_vs_length_ax(runs, *, targets=None, ax=None, converged_only=True):
    """Fig. 1 / 5: sharpness (×4) vs n."""
    ax = metric_vs_length_ax(runs, metric="sharpness", targets=targets, ax=ax, converged_only=converged_only,
                             ylabel="sharpness (×4)")
    ax.yaxis.set_major_formatter(_four_decimals())
    return ax


def blowup_vs_length_ax(runs, *, targets=None, ax=None, converged_only=True):
    """Fig. 6/7: LayerNorm blowup (official ``maxs_prod``) vs n, log axis."""
    return metric_vs_length_ax(runs, metric="blowup_maxs_prod", targets=targets, ax=ax, converged_only=converged_only,
                               log=True,
                               ylabel="LayerNorm blowup")


def norm_vs_length_ax(runs, *, targets=None, ax=None, converged_only=True):
    """Fig. 7/8: parameter norm (positional embeddings excluded) vs n."""
    return metric_vs_length_ax(runs, metric="param_norm", targets=targets, ax=ax, converged_only=converged_only,
                               ylabel="parameter norm")


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


def scaling_figure(runs, *, targets=None, converged_only=True, title=None):
    """Fig. 1 / 5–8 in one row: sharpness (×4), LayerNorm blowup (log) and parameter norm vs n,
    one legend for the three panels. ``title`` (e.g. experiment and preset) heads the caption,
    which says the filter and the band, names targets with no run to draw, and gives the
    sharpness slopes ("n/a" where fewer than 3 runs over 2 lengths remain)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(3 * SINGLE_COLUMN[0], SINGLE_COLUMN[1] + 0.6), layout="constrained")
    sharpness_vs_length_ax(runs, targets=targets, ax=axes[0], converged_only=converged_only)
    blowup_vs_length_ax(runs, targets=targets, ax=axes[1], converged_only=converged_only)
    norm_vs_length_ax(runs, targets=targets, ax=axes[2], converged_only=converged_only)
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
