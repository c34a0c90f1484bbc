"""Figures 3 and 12–14: loss, sharpness, blowup and norm during training on PARITY, aligned at
the convergence step."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..plot import SINGLE_COLUMN, _caption, _column, _log, _note, _plt, _style, converged
from ..sweep.config import RunConfig
from ._base import PAPER, Experiment, Stage, resolve, run_fields

#: the official convergence step: first logged step whose measurement-batch loss is below this
CONVERGENCE_LOSS = 0.01

_DYN = dict(PAPER, target="parity", n=25, dynamic_every=100, dynamic_batches=1, dynamic_repeats=500, measure=False)
PRESETS = {
    "20k": {
        # sweeps/dynamic_metrics_1.yaml: seed 0..100 x wd {0, .1, .2, .3}, 20k steps = 404 runs
        "paper": dict(_DYN, seeds=tuple(range(101)), weight_decays=(0.0, 0.1, 0.2, 0.3), steps=20_000),
        "quick": dict(_DYN, n=8, seeds=tuple(range(4)), weight_decays=(0.0, 0.1), steps=3000, d_model=32,
                      batch_size=128, lr=2e-3, dynamic_every=50, dynamic_repeats=20, log_every=50, eval_batches=50),
        "ci": dict(_DYN, n=4, seeds=(0,), weight_decays=(0.1,), steps=400, d_model=16, batch_size=64, lr=3e-3,
                   dynamic_every=50, dynamic_repeats=4, log_every=50, eval_batches=4),
    },
    "100k": {
        # sweeps/dynamic_metrics_2.yaml: seed 0..100 x wd {0, .1}, 100k steps = 202 runs
        "paper": dict(_DYN, seeds=tuple(range(101)), weight_decays=(0.0, 0.1), steps=100_000),
        "quick": dict(_DYN, n=8, seeds=tuple(range(2)), weight_decays=(0.0, 0.1), steps=10_000, d_model=32,
                      batch_size=128, lr=2e-3, dynamic_every=200, dynamic_repeats=20, log_every=200, eval_batches=50),
        "ci": dict(_DYN, n=4, seeds=(0,), weight_decays=(0.0,), steps=400, d_model=16, batch_size=64, lr=3e-3,
                   dynamic_every=100, dynamic_repeats=4, log_every=100, eval_batches=4),
    },
}


def dynamics(preset: str = "ci", *, variant: str = "20k", **overrides) -> Experiment:
    """PARITY training with probes every ``dynamic_every`` steps (the Measure callback).

    Parameters
    ----------
    preset : {"ci", "quick", "paper"}
        "paper": n=25, d=128, B=1024, probes every 100 steps on one fixed batch with R=500
        noise draws (re-seeded with the run seed: the same draws at every step), no final
        measurement; variant "20k" is ``dynamic_metrics_1`` (404 runs), "100k" is
        ``dynamic_metrics_2`` (202 runs).
    **overrides
        ``target``, ``n``, ``seeds``, ``weight_decays``, ``steps``, ``dynamic_every``,
        ``dynamic_repeats``, ``dynamic_batches`` and the model/training settings.
    """
    if variant not in PRESETS:
        raise ValueError(f"variant must be '20k' or '100k', got {variant!r}")
    params, changed = resolve("dynamics", PRESETS[variant], preset, overrides)
    fields = run_fields(params)
    fields.pop("weight_decay")

    def build(store=None):
        return [RunConfig(target=params["target"], n=params["n"], seed=s, weight_decay=wd, **fields,
                          tags=dict(experiment="dynamics", variant=variant))
                for s in params["seeds"] for wd in params["weight_decays"]]

    return Experiment(name="dynamics", preset=preset, params=params, overrides=changed, stages=[Stage("train", build)],
                      figures="Fig. 3, 12-14", variant=None if variant == "20k" else variant, _plot=_figure,
                      _report=_report)


def aligned_history(history: pd.DataFrame, *, loss_column: str = "measure_loss",
                    threshold: float = CONVERGENCE_LOSS) -> pd.DataFrame:
    """Add ``convergence_step`` (the first logged step whose ``loss_column`` < threshold; NaN if
    never) and ``steps_after_convergence`` = step - convergence_step to each run's history."""
    if not len(history):
        return history.assign(convergence_step=pd.Series(dtype=float), steps_after_convergence=pd.Series(dtype=float))
    probed = history.dropna(subset=[loss_column]) if loss_column in history else history.iloc[0:0]
    below = probed[probed[loss_column] < threshold]
    first = below.groupby("key")["step"].min()
    out = history.copy()
    out["convergence_step"] = out["key"].map(first).astype(float)
    out["steps_after_convergence"] = out["step"] - out["convergence_step"]
    return out


def filtered_history(exp, store) -> pd.DataFrame:
    """The histories of the runs the official plots keep (finished, eval loss < 1e-3), aligned at the
    convergence step; a run that never reached it is dropped by the figure as before."""
    kept = set(converged(exp.results(store))["key"])
    hist = exp.history(store)
    return aligned_history(hist[hist["key"].isin(kept)] if len(hist) else hist)


def _figure(exp, store, **kwargs):
    return dynamics_figure(filtered_history(exp, store), **kwargs)


def _report(exp, store):
    runs = exp.results(store)
    hist = filtered_history(exp, store)
    if not len(hist):
        return f"{exp.sweep}: no finished run passes the official filter (eval MSE < 1e-3) of {len(runs)} stored"
    per_run = hist.groupby("key").agg(wd=("weight_decay", "first"), conv=("convergence_step", "first"))
    lines = [f"{exp.sweep}: {len(per_run)} of {len(runs)} stored runs pass the official filter (finished, eval MSE < 1e-3)"]
    for wd, g in per_run.groupby("wd"):
        c = g["conv"].dropna()
        lines.append(f"  weight decay {wd:g}: {len(c)}/{len(g)} converged (measurement loss < {CONVERGENCE_LOSS}), "
                     f"median convergence step {np.median(c) if len(c) else float('nan'):.0f}")
    return "\n".join(lines)


# ---- figure and report ----------------------------------------------------------------------------
DYNAMIC_PANELS = (("measure_loss", "loss", False), ("sharpness", "sharpness (×4)", False),
                  ("blowup_maxs_prod", "LayerNorm blowup", True), ("param_norm", "weight norm", False))


def dynamics_axes(history, *, weight_decay=None, axes=None, window=None, min_fraction=0.25):
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


def dynamics_figure(history, *, weight_decays=None, title=None):
    """One column of the four dynamic panels per weight decay."""
    plt = _plt()
    if weight_decays is None:
        weight_decays = sorted(set(history["weight_decay"].astype(float))) if len(history) else [None]
    fig, axes = plt.subplots(len(DYNAMIC_PANELS), len(weight_decays),
                             figsize=(SINGLE_COLUMN[0] * len(weight_decays), 1.6 * len(DYNAMIC_PANELS)),
                             sharex="col", squeeze=False, layout="constrained")
    for j, wd in enumerate(weight_decays):
        dynamics_axes(history, weight_decay=wd, axes=axes[:, j])
    _caption(fig, title, DYNAMICS_CAPTION)
    return fig
