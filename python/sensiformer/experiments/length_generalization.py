"""Beyond the paper: train on lengths up to ``n_train``, evaluate on longer inputs.

The model has ``n_positions`` positional rows; training cycles through ``train_lengths``
(``length_chunk`` steps each, one AdamW state), so positions beyond ``n_train`` are never
trained. Evaluation at every length in ``eval_lengths`` (exact for n <= 16).
"""

from __future__ import annotations

from ..sweep.config import RunConfig
from ._base import Experiment, Stage, resolve, run_fields
from .scaling import _PAPER

PRESETS = {
    "paper": dict(_PAPER, targets=("parity", "majority", "first"), train_lengths=tuple(range(4, 21)),
                  eval_lengths=tuple(range(4, 41)), seeds=tuple(range(10)), length_chunk=10, measure=False),
    "quick": dict(_PAPER, targets=("parity", "majority", "first"), train_lengths=tuple(range(2, 9)),
                  eval_lengths=tuple(range(2, 17)), seeds=(0, 1, 2), length_chunk=10, measure=False, d_model=32,
                  batch_size=128, lr=2e-3, steps=3000, log_every=250, eval_batches=20),
    "ci": dict(_PAPER, targets=("parity", "first"), train_lengths=(2, 3, 4), eval_lengths=(2, 3, 4, 5, 6), seeds=(0,),
               length_chunk=10, measure=False, d_model=16, batch_size=64, lr=3e-3, steps=200, log_every=100,
               eval_batches=2),
}


def length_generalization(preset: str = "ci", **overrides) -> Experiment:
    """Accuracy and MSE by evaluation length for models trained on shorter inputs.

    Overridable: ``targets``, ``train_lengths``, ``eval_lengths``, ``seeds``, ``length_chunk`` and the
    model/training settings.
    """
    params, changed = resolve("length_generalization", PRESETS, preset, overrides)

    def build(store=None):
        n_train = max(params["train_lengths"])
        return [RunConfig(target=t, n=n_train, seed=s, train_lengths=params["train_lengths"],
                          eval_lengths=params["eval_lengths"], length_chunk=params["length_chunk"],
                          **run_fields(params), tags=dict(experiment="length_generalization"))
                for t in params["targets"] for s in params["seeds"]]

    return Experiment(name="length_generalization", preset=preset, params=params, overrides=changed,
                      stages=[Stage("train", build)], figures="beyond the paper", _plot=_figure, _report=_report)


def long_form(runs):
    """One row per (run, evaluation length): target, seed, length, eval_loss, eval_accuracy, trained."""
    import pandas as pd

    rows = []
    for r in runs.to_dict("records"):
        for length in r.get("eval_lengths") or ():
            rows.append(dict(key=r["key"], target=r["target"], seed=r["seed"], length=length,
                             eval_loss=r.get(f"eval_loss@{length}"), eval_accuracy=r.get(f"eval_accuracy@{length}"),
                             trained=length in tuple(r["train_lengths"])))
    return pd.DataFrame(rows, columns=["key", "target", "seed", "length", "eval_loss", "eval_accuracy", "trained"])


def _figure(exp, store, **kwargs):
    from .. import plot

    return plot.length_generalization_figure(long_form(exp.results(store)), **kwargs)


def _report(exp, store):
    df = long_form(exp.results(store))
    if not len(df):
        return f"{exp.sweep}: no finished runs"
    table = df.pivot_table(index="length", columns="target", values="eval_accuracy", aggfunc="mean")
    return f"{exp.sweep}: mean accuracy by evaluation length\n{table.to_string(float_format='%.3f')}"
