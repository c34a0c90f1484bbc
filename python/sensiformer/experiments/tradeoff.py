"""Figures 2, 9, 10: the parameter-norm / LayerNorm-blowup tradeoff (random sweeps)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..plot import (COLORS, CONVERGED, LABELS, SINGLE_COLUMN, _axes, _caption, _legend, _log, _missing, _note, _plt,
                    _t_quantile, _targets, converged)
from ..sweep.config import RunConfig
from ._base import PAPER, Experiment, Stage, resolve, run_fields

TARGETS = ("parity", "majority", "first", "mean")

# The four official random sweeps (sweeps/weight_norm_blowup_tradeoff_{1..4}.yaml). Each part:
# (run count, lengths: ("uniform", lo, hi) inclusive ints or ("values", ...), seeds (inclusive),
# targets). lr ~ U[1e-4, 5e-4] and weight_decay ~ U[0, 0.4] everywhere; ints are drawn
# uniformly and inclusively (wandb int_uniform), floats uniformly, categories uniformly.
PAPER_PARTS = {
    "tradeoff_1": dict(runs=1000, lengths=("uniform", 4, 25), seeds=(0, 1000), targets=("majority", "first", "mean")),
    "tradeoff_2": dict(runs=1000, lengths=("uniform", 4, 25), seeds=(0, 1000), targets=("parity",)),
    "tradeoff_3": dict(runs=500, lengths=("values", 5, 10, 15, 20), seeds=(0, 1000), targets=TARGETS),
    "tradeoff_4": dict(runs=500, lengths=("values", 5, 10, 15, 20), seeds=(1001, 2000), targets=TARGETS),
}

PRESETS = {
    "paper": dict(PAPER, parts=PAPER_PARTS, lr_range=(1e-4, 5e-4), weight_decay_range=(0.0, 0.4), sample_seed=0),
    # quick: the same four kinds of sweep, smaller, on the d=32 model that fits PARITY up to n=8, with the
    # official lr range: measured 2026-12-05 (52 runs, 50 converged), PARITY's frontier moves outward with n
    # (c = +0.47 per bit, 95% CI [+0.28, +0.67] in frontier_shift) and no other target's does (CIs around 0).
    # With lr in [1e-3, 3e-3] every target reached blowups of 10^3 and PARITY's c was +0.18 [-0.18, +0.54].
    "quick": dict(PAPER, parts={
        "tradeoff_1": dict(runs=12, lengths=("uniform", 4, 8), seeds=(0, 1000), targets=("majority", "first", "mean")),
        "tradeoff_2": dict(runs=24, lengths=("uniform", 4, 8), seeds=(0, 1000), targets=("parity",)),
        "tradeoff_3": dict(runs=16, lengths=("values", 4, 6, 8), seeds=(0, 1000), targets=TARGETS),
    }, lr_range=(1e-4, 5e-4), weight_decay_range=(0.0, 0.4), sample_seed=0, d_model=32, batch_size=128, steps=3000,
        log_every=250, eval_batches=50, measure_batches=8),
    # ci: PARITY at n = 3, 4 and 600 steps, so that its panel has converged runs to draw
    "ci": dict(PAPER, parts={
        "tradeoff_2": dict(runs=2, lengths=("values", 3, 4), seeds=(0, 1000), targets=("parity",)),
        "tradeoff_3": dict(runs=2, lengths=("values", 4, 6), seeds=(0, 1000), targets=("first", "majority")),
    }, lr_range=(1e-3, 3e-3), weight_decay_range=(0.0, 0.4), sample_seed=0, d_model=16, batch_size=64, steps=600,
        log_every=100, eval_batches=4, measure_batches=2),
}


def sample_part(part: dict, rng: np.random.Generator, lr_range, wd_range) -> list[dict]:
    """Draw one random sweep's run parameters (n, seed, target, lr, weight_decay)."""
    kind, *spec = part["lengths"]
    out = []
    for _ in range(part["runs"]):
        n = int(rng.integers(spec[0], spec[1], endpoint=True)) if kind == "uniform" else int(rng.choice(spec))
        seed = int(rng.integers(part["seeds"][0], part["seeds"][1], endpoint=True))
        target = str(part["targets"][int(rng.integers(len(part["targets"])))])
        lr = float(rng.uniform(*lr_range))
        wd = float(rng.uniform(*wd_range))
        out.append(dict(n=n, seed=seed, target=target, lr=lr, weight_decay=wd))
    return out


def tradeoff(preset: str = "ci", **overrides) -> Experiment:
    """Random sweeps over length, learning rate and weight decay; parameter norm vs blowup.

    "paper" draws the four official random sweeps with their distributions and run counts
    (1000 + 1000 + 500 + 500; see ``PAPER_PARTS``) from ``numpy.random.default_rng(sample_seed)``
    (the official draws came from wandb's sweep controller and cannot be replayed). Each run is
    tagged with its part. Overridable: ``parts``, ``lr_range``, ``weight_decay_range``,
    ``sample_seed`` and the model/training settings (``d_model``, ``batch_size``, ``steps``, ...).
    """
    params, changed = resolve("tradeoff", PRESETS, preset, overrides)
    fields = run_fields(params)
    fields.pop("lr"), fields.pop("weight_decay")

    def build(store=None):
        rng = np.random.default_rng(params["sample_seed"])
        configs = []
        for name in sorted(params["parts"]):
            for draw in sample_part(params["parts"][name], rng, params["lr_range"], params["weight_decay_range"]):
                configs.append(RunConfig(**draw, **fields, tags=dict(experiment="tradeoff", part=name)))
        return configs

    return Experiment(name="tradeoff", preset=preset, params=params, overrides=changed, stages=[Stage("train", build)],
                      figures="Fig. 2, 9, 10", _plot=_figure, _report=_report)


def _figure(exp, store, **kwargs):
    return tradeoff_figure(exp.results(store), **kwargs)


def _report(exp, store):
    df = exp.results(store)
    if not len(df):
        return f"{exp.sweep}: no finished runs"
    conv = df[df["converged"] == True]  # noqa: E712
    counts = conv.groupby("target").size().to_dict()
    lines = [f"{exp.sweep}: {len(df)} runs, {len(conv)} converged (eval MSE < 1e-3) by target: {counts}",
             "frontier vs n: param_norm = a + b log10(blowup) + c n over the converged runs; c > 0: at a given "
             "blowup, longer inputs need a larger norm"]
    for r in frontier_shift(df).itertuples():
        lines.append(f"  {LABELS.get(r.target, r.target):9s} c = {r.per_bit:+.3f} per bit   95% CI [{r.ci_low:+.3f}, "
                     f"{r.ci_high:+.3f}]   b = {r.per_decade:+.2f} per decade of blowup   {r.runs} runs over "
                     f"{r.lengths} lengths")
    return "\n".join(lines)


# ---- figure and report ----------------------------------------------------------------------------
def frontier_shift(runs, *, converged_only=True, level=0.95) -> pd.DataFrame:
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


def tradeoff_ax(runs, *, ax=None, target=None, color_by="n", converged_only=True, colorbar=True):
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


def tradeoff_figure(runs, *, converged_only=True, title=None):
    """PARITY coloured by n, and every target at once (coloured by target); each dot a run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(2 * SINGLE_COLUMN[0] + 0.8, SINGLE_COLUMN[1] + 0.5), layout="constrained")
    tradeoff_ax(runs, ax=axes[0], target="parity", color_by="n", converged_only=converged_only)
    tradeoff_ax(runs, ax=axes[1], color_by="target", converged_only=converged_only)
    axes[1].set_title("all targets", fontsize="small")
    kept = len(converged(runs)) if converged_only else len(runs)
    _caption(fig, title, f"{CONVERGED if converged_only else 'all finished runs'}: {kept} of {len(runs)} runs, "
                         "each dot a run")
    return fig
