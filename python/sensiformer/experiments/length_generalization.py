"""Beyond the paper: train on lengths up to ``n_train``, evaluate on longer inputs, per positional encoding.

The model has ``n_positions`` positional rows; training cycles through ``train_lengths``
(``length_chunk`` steps each, one AdamW state), so learned positional rows beyond ``n_train`` are
never trained. Every target is trained once per encoding in ``positionals`` (the engine's: the
paper's learned table concatenated with the tokens, a learned table added, fixed sinusoids added,
or none, when the encoder sees a multiset of tokens) and evaluated at every length in
``eval_lengths`` (exact for n <= 16).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..plot import (BAND, LABELS, SINGLE_COLUMN, _axes, _caption, _figure_legend, _integer_ticks, _legend, _mean_band,
                    _note, _plt, _targets)
from ..sweep.config import LATE_FIELDS, POSITIONALS, RunConfig
from ..sweep.probe_config import LengthEvaluation
from ._base import PAPER, Experiment, Stage, resolve, run_fields

TARGETS = ("parity", "majority", "first")
#: an evaluation length counts as solved when the accuracy, averaged over seeds, reaches this
SOLVED_ACCURACY = 0.95

PRESETS = {
    # the paper's model and training (d=128, B=1024, lr 3e-4, 10k steps) on lengths 4..20, evaluated up to twice
    # as long; every encoding of the engine: a cluster preset
    "paper": dict(PAPER, targets=TARGETS, positionals=POSITIONALS, train_lengths=tuple(range(4, 21)),
                  eval_lengths=tuple(range(4, 41)), seeds=tuple(range(10)), length_chunk=10, measure=False,
                  norm_type="layer", rope_base=10000.0),
    # lengths 2..8, evaluated up to 16 (exact), every encoding, 5 seeds: lr 1e-3 and 8000 steps fit PARITY at the
    # trained lengths with the learned tables (with lr 2e-3 and 3000 steps it did not in seed 0). Measured
    # 2026-12-05 with 5 encodings: 75 runs, 297-319 CPU-seconds (2.5 min on an idle 2-core AVX-512 host, 3.4-3.5 min
    # shared with another job); what it shows is in the README
    "quick": dict(PAPER, targets=TARGETS, positionals=POSITIONALS, train_lengths=tuple(range(2, 9)),
                  eval_lengths=tuple(range(2, 17)), seeds=tuple(range(5)), length_chunk=10, measure=False,
                  d_model=32, batch_size=128, lr=1e-3, steps=8000, log_every=250, eval_batches=20, norm_type="layer",
                  rope_base=10000.0),
    "ci": dict(PAPER, targets=("parity", "first"), positionals=("concat", "none"), train_lengths=(2, 3, 4),
               eval_lengths=(2, 3, 4, 5, 6), seeds=(0,), length_chunk=10, measure=False, d_model=16, batch_size=64,
               lr=3e-3, steps=200, log_every=100, eval_batches=2, norm_type="layer", rope_base=10000.0),
}


def length_generalization(preset: str = "ci", **overrides) -> Experiment:
    """Accuracy and MSE by evaluation length for models trained on shorter inputs, per positional encoding.

    Parameters
    ----------
    preset : {"ci", "quick", "paper"}
        "paper": the paper's model and training on lengths 4..20, evaluated on 4..40, every encoding, 10 seeds;
        "quick": d=32 on lengths 2..8, evaluated on 2..16, every encoding, 5 seeds: 75 runs with the engine's 5
        encodings, 297-319 CPU-seconds (2.5 min measured on an idle 2-core AVX-512 host; the README says what
        it shows); "ci" runs every code path in seconds.
    **overrides
        ``targets``, ``positionals`` (a grid axis: names from the engine's ``positional`` vocabulary),
        ``train_lengths``, ``eval_lengths``, ``seeds``, ``length_chunk``, ``norm_type``, ``rope_base`` (RoPE's
        base) and the model/training settings.

    Raises
    ------
    ValueError
        An encoding the engine does not know, or no encoding at all.
    """
    params, changed = resolve("length_generalization", PRESETS, preset, overrides)
    _check_positionals(params["positionals"])

    def build(store=None):
        n_train = max(params["train_lengths"])
        return [RunConfig(target=t, n=n_train, seed=s, positional=p, train_lengths=params["train_lengths"],
                          length_evaluation=LengthEvaluation(lengths=params["eval_lengths"]),
                          length_chunk=params["length_chunk"],
                          **run_fields(params), tags=dict(experiment="length_generalization"))
                for t in params["targets"] for p in params["positionals"] for s in params["seeds"]]

    build()  # any other bad value (a target, a length) raises here, naming its field
    return Experiment(name="length_generalization", preset=preset, params=params, overrides=changed,
                      stages=[Stage("train", build)], figures="beyond the paper", _plot=_figure, _report=_report)


def _check_positionals(positionals):
    if not positionals:
        raise ValueError(f"positionals must name at least one encoding of {POSITIONALS}")
    unknown = [p for p in positionals if p not in POSITIONALS]
    if unknown:
        raise ValueError(f"positionals must each be a positional encoding of the engine, one of {POSITIONALS}; "
                         f"got {unknown[0]!r}")


def _positional(value) -> str:
    """A stored run's encoding: runs stored before the field existed used the paper's."""
    return value if isinstance(value, str) else LATE_FIELDS["positional"]


def long_form(runs):
    """One row per (run, evaluation length): target, positional, seed, length, eval_loss, eval_accuracy,
    trained (a training length) and beyond (longer than every training length)."""
    rows = []
    for r in runs.to_dict("records"):
        trained = tuple(r["train_lengths"])
        for length in r.get("eval_lengths") or ():
            rows.append(dict(key=r["key"], target=r["target"], positional=_positional(r.get("positional")),
                             seed=r["seed"], length=length, eval_loss=r.get(f"eval_loss@{length}"),
                             eval_accuracy=r.get(f"eval_accuracy@{length}"), trained=length in trained,
                             beyond=length > max(trained)))
    return pd.DataFrame(rows, columns=["key", "target", "positional", "seed", "length", "eval_loss", "eval_accuracy",
                                       "trained", "beyond"])


def _reach(curve: pd.Series) -> float:
    """The longest length up to which every evaluated length is solved (mean accuracy >= SOLVED_ACCURACY);
    NaN when the shortest is not."""
    solved = curve.sort_index() >= SOLVED_ACCURACY
    failed = solved.index[~solved.to_numpy()]
    below = solved.index[solved.index < failed[0]] if len(failed) else solved.index
    return float(below.max()) if len(below) else float("nan")


def summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per (target, positional): runs; ``trained``: mean accuracy at the training lengths; ``beyond`` and
    ``beyond_sd``: mean accuracy at the lengths longer than every training length, and its SD across seeds
    (each run's mean over those lengths); ``longest``: mean accuracy at the longest evaluated length;
    ``reach``: the longest length up to which every length's mean accuracy is >= ``SOLVED_ACCURACY``."""
    columns = ["target", "positional", "runs", "trained", "beyond", "beyond_sd", "longest", "reach"]
    rows = []
    for (target, positional), g in long.groupby(["target", "positional"], sort=False):
        per_run_beyond = g[g["beyond"]].groupby("key")["eval_accuracy"].mean()
        curve = g.groupby("length")["eval_accuracy"].mean()
        rows.append(dict(target=target, positional=positional, runs=g["key"].nunique(),
                         trained=g.loc[g["trained"], "eval_accuracy"].mean(),
                         beyond=per_run_beyond.mean() if len(per_run_beyond) else np.nan,
                         beyond_sd=per_run_beyond.std(ddof=1) if len(per_run_beyond) > 1 else np.nan,
                         longest=curve.iloc[-1] if len(curve) else np.nan, reach=_reach(curve)))
    table = pd.DataFrame(rows, columns=columns)
    table["reach"] = table["reach"].astype("Int64")  # a length: printed as one, <NA> when none is solved
    return table


def _figure(exp, store, **kwargs):
    return length_generalization_figure(long_form(exp.results(store)), **kwargs)


def _report(exp, store):
    df = long_form(exp.results(store))
    if not len(df):
        return f"{exp.sweep}: no finished runs"
    trained = sorted(set(df.loc[df["trained"], "length"]))
    beyond = sorted(set(df.loc[df["beyond"], "length"]))
    span = lambda lengths: f"{lengths[0]}..{lengths[-1]}" if lengths else "none"  # noqa: E731
    number = lambda v: f"{v:.3f}"  # noqa: E731
    parts = [f"{exp.sweep}: accuracy by positional encoding, trained on lengths {span(trained)}, evaluated beyond "
             f"on {span(beyond)} (mean over seeds; beyond_sd: SD across seeds of each run's mean beyond; reach: the "
             f"longest length up to which every length has mean accuracy >= {SOLVED_ACCURACY})",
             summary(df).to_string(index=False, float_format=number)]
    for target, g in df.groupby("target", sort=False):  # a table per target: one column per encoding
        by_length = g.pivot_table(index="length", columns="positional", values="eval_accuracy", aggfunc="mean",
                                  sort=False)
        parts.append(f"\n{target}: mean accuracy by evaluation length (* trained)")
        by_length.index = pd.Index([f"{k}{' *' if k in trained else ''}" for k in by_length.index], name="length")
        parts.append(by_length.to_string(float_format=number))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        return "\n".join(parts)


# ---- figure and report ----------------------------------------------------------------------------
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


def length_generalization_ax(long_form, *, ax=None, metric="eval_accuracy", target=None):
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
        length_generalization_ax(long_form, ax=ax, metric=metric, target=target)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    _figure_legend(fig, axes[0], ncols=8)  # one row: the encodings, the shading, the 0.5 line
    trained = sorted(set(long_form.loc[long_form["trained"], "length"])) if len(long_form) else []
    spans = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in _trained_spans(trained))
    band = BAND.format(" clipped to [0,\u00a01]" if metric == "eval_accuracy" else "")  # no line break in [0, 1]
    trained_note = f"; grey: the trained lengths ({spans}); a line per positional encoding" if spans else ""
    _caption(fig, title, band + trained_note)
    return fig
