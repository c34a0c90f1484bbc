"""Figure 11: PARITY with a scratchpad (the encoder-decoder ``Seq2SeqTransformer``), up to n=1024.

Each run trains the official ``TorchModelWithScratchpad`` (d=32, 2+2 layers) by teacher forcing
on the prefix parities y_t = x_1 xor ... xor x_t, then measures on fresh batches the
teacher-forced sharpness, the encoder and decoder LayerNorm blowup (the official hooks'
``maxs_prod``), the parameter norm and the per-token autoregressive accuracy; the figure keeps
the runs whose autoregressive accuracy exceeds 0.999 (paper.md §3.2, §5).
"""

from __future__ import annotations

from ..plot import (BAND, SINGLE_COLUMN, _caption, _four_decimals, _plt, converged, converged_counts,
                    metric_vs_length_ax, slopes)
from ..sweep.config import RunConfig
from ._base import PAPER, Experiment, Stage, resolve, run_fields

#: sweeps/scratchpad.yaml
LENGTHS = (4, 39, 74, 109, 144, 179, 215, 250, 285, 320, 355, 390, 426, 461, 496, 531, 566, 601, 637, 672, 707, 742,
           777, 812, 848, 883, 918, 953, 988, 1024)

_SP = dict(PAPER, d_model=32, batch_size=128)
PRESETS = {
    # sweeps/scratchpad.yaml: 30 lengths x seed 0..9, d=32, B=128, the paper's defaults otherwise = 300 runs
    "paper": dict(_SP, lengths=LENGTHS, seeds=tuple(range(10))),
    # measured 2026-12-05: 15 runs, 203 CPU-seconds (2.8 min on a 2-core AVX-512 host), all 15 pass the
    # filter; n=64 passes 0.999 after ~1000 steps at lr 1e-3, B=64 (the paper's lr 3e-4 needs several times more)
    "quick": dict(_SP, lengths=(4, 8, 16, 32, 64), seeds=(0, 1, 2), batch_size=64, lr=1e-3, steps=2000,
                  log_every=250, eval_batches=8, measure_batches=8),
    "ci": dict(_SP, lengths=(4, 8), seeds=(0,), d_model=16, batch_size=32, lr=3e-3, steps=300, log_every=100,
               eval_batches=2, measure_batches=2),
}


def scratchpad(preset: str = "ci", **overrides) -> Experiment:
    """PARITY with a scratchpad: sharpness (×4 in plots), encoder and decoder LayerNorm blowup
    and parameter norm vs n (Fig. 11); the paper's claim is that none of them grows with n.

    Parameters
    ----------
    preset : {"ci", "quick", "paper"}
        "paper" is the official grid (``sweeps/scratchpad.yaml``: 30 lengths from 4 to 1024 x
        10 seeds, d=32, B=128, 10k steps at lr 3e-4); "quick" lengths 4-64 x 3 seeds (d=32, B=64,
        lr 1e-3, 2000 steps: 203 CPU-seconds, 2.8 minutes measured on a 2-core AVX-512 host);
        "ci" runs every code path in seconds.
    **overrides
        ``lengths``, ``seeds`` and the model/training/probe settings (``d_model``, ``lr``,
        ``steps``, ``batch_size``, ``measure_batches``, ``sharpness_repeats``, ...).
    """
    params, changed = resolve("scratchpad", PRESETS, preset, overrides)

    def build(store=None):
        # the official grid order: n, then seed
        return [RunConfig(model="scratchpad", target="parity", n=n, seed=s, **run_fields(params),
                          tags=dict(experiment="scratchpad"))
                for n in params["lengths"] for s in params["seeds"]]

    return Experiment(name="scratchpad", preset=preset, params=params, overrides=changed, stages=[Stage("train", build)],
                      figures="Fig. 11", _plot=_figure, _report=_report)


def _figure(exp, store, **kwargs):
    return scratchpad_figure(exp.results(store), **kwargs)


def _report(exp, store):
    return scratchpad_report(exp.results(store))


# ---- figure and report ----------------------------------------------------------------------------
#: Fig. 11's panels: (column, y label); the blowups are the official hooks' (paper.md §9.6)
SCRATCHPAD_PANELS = (("sharpness", "sharpness (×4)"),
                     ("blowup_official_encoder_maxs_prod", "encoder LayerNorm blowup"),
                     ("blowup_official_decoder_maxs_prod", "decoder LayerNorm blowup"),
                     ("param_norm", "parameter norm"))


def scratchpad_figure(runs, *, converged_only=True, title=None):
    """Fig. 11 in one row: sharpness (×4), encoder and decoder LayerNorm blowup and parameter
    norm vs n (log2 axis: the lengths double), for runs whose autoregressive accuracy exceeds
    0.999 (``converged``). The y axes fit the data (not from 0), so that growth shows; read
    flatness from the tick values and the slopes of ``scratchpad_report``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(SCRATCHPAD_PANELS), figsize=(len(SCRATCHPAD_PANELS) * 3.0, SINGLE_COLUMN[1] + 0.4),
                             layout="constrained")
    for ax, (metric, label) in zip(axes, SCRATCHPAD_PANELS):
        metric_vs_length_ax(runs, metric=metric, targets=["parity"], ax=ax, converged_only=converged_only,
                            ylabel=label, log2_lengths=True)
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
