"""Figure 1 and 5–8: sharpness, LayerNorm blowup and parameter norm against input length."""

from __future__ import annotations

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


def scaling(preset: str = "ci", variant: str = "short", **overrides) -> Experiment:
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
    from .. import plot

    return plot.scaling_figure(exp.results(store), **kwargs)


def _report(exp, store):
    from .. import plot

    return plot.scaling_report(exp.results(store))
