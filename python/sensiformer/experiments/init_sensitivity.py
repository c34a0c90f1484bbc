"""Beyond the paper: the sensitivity of randomly initialised transformers (the 2026 follow-up,
paper.md §2.6), across lengths, widths, depths and initialisations.

No training (``steps=0``): each run builds a model, initialises it (``init``: the official
PyTorch init or the follow-up's Gaussian / uniform / Xavier-uniform / Xavier-normal), and
records the exact average sensitivity and sensitivity profile ``K_k = #{x : s(x) = k}`` of the
Boolean function ``out > threshold`` on {0,1}^n (``sensiformer.analysis.model_sensitivity``).
The default threshold 0 is the sign of the output, as the follow-up's recognizer.
"""

from __future__ import annotations

import pandas as pd

from ..plot import BAND, SINGLE_COLUMN, _caption, _figure_legend, _integer_ticks, _legend, _mean_band, _plt, _style
from ..sweep.config import INITS, RunConfig
from ..sweep.probe_config import FinalMeasurement, ModelSensitivity
from ._base import PAPER, Experiment, Stage, resolve

_INIT = dict(n_heads=2, batch_size=PAPER["batch_size"], dtype="float32", threshold=0.0)
PRESETS = {
    "paper": dict(_INIT, lengths=(8, 12, 16, 20), widths=(16, 64, 256), depths=(1, 2, 4), inits=INITS,
                  seeds=tuple(range(20))),
    "quick": dict(_INIT, lengths=(6, 10, 14), widths=(16, 64), depths=(2,), inits=INITS, seeds=tuple(range(5))),
    "ci": dict(_INIT, lengths=(4, 6), widths=(8,), depths=(1,), inits=("pytorch", "gaussian"), seeds=(0,)),
}


def init_sensitivity(preset: str = "ci", **overrides) -> Experiment:
    """Average sensitivity and sensitivity profile of random models at initialisation.

    Overridable: ``lengths``, ``widths``, ``depths``, ``inits``, ``seeds``, ``n_heads``,
    ``threshold``, ``dtype``.
    """
    params, changed = resolve("init_sensitivity", PRESETS, preset, overrides)

    def build(store=None):
        return [RunConfig(target="parity", n=n, d_model=d, n_layers=L, n_heads=params["n_heads"], init=init, seed=s,
                          steps=0, final=FinalMeasurement(enabled=False),
                          sensitivity=ModelSensitivity(enabled=True, threshold=params["threshold"]),
                          dtype=params["dtype"], batch_size=params["batch_size"], eval_batches=1,
                          tags=dict(experiment="init_sensitivity"))
                for n in params["lengths"] for d in params["widths"] for L in params["depths"]
                for init in params["inits"] for s in params["seeds"]]

    return Experiment(name="init_sensitivity", preset=preset, params=params, overrides=changed,
                      stages=[Stage("init", build)], figures="beyond the paper (follow-up §2.6)", _plot=_figure,
                      _report=_report)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean average sensitivity, its ratio to a random function's n/2, and the mean fraction of
    zero-sensitivity inputs, per (init, d_model, n_layers, n)."""
    if not len(runs):
        return pd.DataFrame()
    g = runs.groupby(["init", "d_model", "n_layers", "n"])
    out = g.agg(runs=("key", "size"), average_sensitivity=("model_as", "mean"),
                zero_sensitivity_fraction=("model_k0_fraction", "mean"), ones_fraction=("model_ones_fraction", "mean"))
    out["relative_to_random"] = out["average_sensitivity"] / (out.index.get_level_values("n").to_numpy() / 2)
    return out.reset_index()


def _figure(exp, store, **kwargs):
    return init_sensitivity_figure(exp.results(store), **kwargs)


def _report(exp, store):
    table = summary(exp.results(store))
    if not len(table):
        return f"{exp.sweep}: no finished runs"
    with pd.option_context("display.width", 160):
        return (f"{exp.sweep}: sensitivity of the function out > {exp.params['threshold']} at initialisation "
                f"(a uniformly random function has n/2 and almost no zero-sensitivity inputs)\n"
                + table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


# ---- figure and report ----------------------------------------------------------------------------
INIT_COLORS = {"pytorch": "#1f77b4", "gaussian": "#ff7f0e", "uniform": "#2ca02c", "xavier_uniform": "#d62728",
               "xavier_normal": "#9467bd"}


def init_sensitivity_axes(runs, *, axes=None):
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
    init_sensitivity_axes(runs, axes=axes)
    _figure_legend(fig, axes, ncols=5)
    pooled = [f"{k}={','.join(map(str, sorted(set(runs[k]))))}" for k in ("d_model", "n_layers")
              if len(runs) and k in runs and runs[k].nunique() > 1]
    band = BAND.format((" and " + ", ".join(pooled) if pooled else "") + ", clipped to the possible range")
    _caption(fig, title, "untrained models, per initialisation; " + band)
    return fig
