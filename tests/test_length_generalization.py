"""Length generalization across positional encodings: the grid per preset, the report's numbers, bad input,
and the ci preset from the command line."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sensiformer import experiments as E
from sensiformer.experiments.length_generalization import long_form, summary
from sensiformer.sweep import Store
from sensiformer.sweep.config import POSITIONALS

#: keys of the ci and paper presets' runs as computed before the positional axis existed (main at 1859496):
#: the paper's encoding stays out of the key, so these runs find their stored results
KEYS_BEFORE = {"ci": ["713ef079065b737d3e4c", "12bdc3bc8b4ce6a544c2"],
               "paper": ["96fd72eb03c2da52baed", "ae3bc6d93743ef7fbad2", "97f7a536d461b5dbb582"]}


# ---- the grid -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset, encodings, runs", [("ci", ("concat", "none"), 2 * 2 * 1),
                                                     ("quick", POSITIONALS, 3 * len(POSITIONALS) * 5),
                                                     ("paper", POSITIONALS, 3 * len(POSITIONALS) * 10)])
def test_every_preset_has_the_positional_axis(preset, encodings, runs):
    exp = E.length_generalization(preset)
    configs = exp.configs()
    assert exp.params["positionals"] == tuple(encodings) and len(configs) == runs
    for target in exp.params["targets"]:
        per_encoding = {p: sorted(c.seed for c in configs if c.target == target and c.positional == p)
                        for p in encodings}
        assert per_encoding == {p: list(exp.params["seeds"]) for p in encodings}, "every (target, encoding, seed)"
    assert len({c.key for c in configs}) == runs
    assert all(c.n == max(c.train_lengths) and c.positions == max(c.length_evaluation.lengths) for c in configs), \
        "learned tables get rows for every evaluated length"


def test_every_encoding_of_the_engine_is_in_the_quick_and_paper_grids():
    from sensiformer import _vocabulary

    for preset in ("quick", "paper"):
        assert set(E.length_generalization(preset).params["positionals"]) == set(_vocabulary.POSITIONALS)


@pytest.mark.parametrize("preset", sorted(KEYS_BEFORE))
def test_runs_with_the_papers_encoding_keep_their_keys(preset):
    configs = E.length_generalization(preset).configs()
    concat = [c for c in configs if c.positional == "concat"]
    assert [c.key for c in concat][:len(KEYS_BEFORE[preset])] == KEYS_BEFORE[preset]
    assert all("positional" not in c.hashed_fields() and "norm_type" not in c.hashed_fields() for c in concat)
    assert all(c.hashed_fields()["positional"] == c.positional for c in configs if c.positional != "concat")


def test_the_quick_preset_is_laptop_sized():
    p = E.length_generalization("quick").params
    assert p["d_model"] == 32 and p["batch_size"] == 128 and p["steps"] == 8000
    assert p["train_lengths"] == tuple(range(2, 9)) and p["eval_lengths"] == tuple(range(2, 17)), \
        "twice the training length, evaluated exactly"


def test_overrides_choose_the_encodings_and_the_norm():
    exp = E.length_generalization("ci", positionals="sinusoidal", norm_type="rms")
    configs = exp.configs()
    assert {c.positional for c in configs} == {"sinusoidal"} and {c.norm_type for c in configs} == {"rms"}
    assert exp.overrides == dict(positionals=("sinusoidal",), norm_type="rms")
    assert exp.sweep != E.length_generalization("ci").sweep
    rope = E.length_generalization("ci", positionals="rope", rope_base=100).configs()
    assert {(c.positional, c.rope_base) for c in rope} == {("rope", 100.0)}


@pytest.mark.parametrize("positionals", ["rope2", ("concat", "learned"), ("Concat",)])
def test_an_unknown_encoding_is_refused_naming_positional(positionals):
    with pytest.raises(ValueError, match="positional") as err:
        E.length_generalization("ci", positionals=positionals)
    assert "concat" in str(err.value), "the message lists the encodings there are"


def test_no_encoding_or_a_bad_norm_is_refused():
    with pytest.raises(ValueError, match="positionals must name at least one"):
        E.length_generalization("ci", positionals=())
    with pytest.raises(ValueError, match="norm_type"):
        E.length_generalization("ci", norm_type="batch")


def test_the_cli_refuses_an_unknown_encoding(tmp_path, capsys):
    from sensiformer.cli import main

    db = tmp_path / "r.db"
    assert main(["reproduce", "length_generalization", "--preset", "ci", "--set", "positionals=concat,alibi",
                 "--store", str(db), "--executor", "serial", "--no-progress"]) == 2
    assert "positional" in capsys.readouterr().err and not db.exists()


# ---- the report's numbers -------------------------------------------------------------------------
#: accuracy at eval lengths 2, 3 (trained) and 4, 5 (beyond) per (encoding, seed)
SYNTHETIC = {("concat", 0): (1.0, 1.0, 0.5, 0.7), ("concat", 1): (1.0, 0.9, 0.6, 0.5),
             ("none", 0): (0.9, 0.8, 0.8, 0.8), ("none", 1): (0.9, 0.8, 0.8, 0.8),
             ("sinusoidal", 0): (1.0, 1.0, 0.9, 1.0), ("sinusoidal", 1): (1.0, 1.0, 0.9, 1.0)}


def synthetic_runs(with_positional=True):
    """A results table as ``Experiment.results`` returns it: one row per run, accuracy per length."""
    rows = []
    for (positional, seed), accuracy in SYNTHETIC.items():
        row = dict(key=f"{positional}{seed}", target="parity", seed=seed, train_lengths=(2, 3),
                   eval_lengths=(2, 3, 4, 5), positional=positional)
        row.update({f"eval_accuracy@{k}": a for k, a in zip((2, 3, 4, 5), accuracy)})
        row.update({f"eval_loss@{k}": (1 - a) / 4 for k, a in zip((2, 3, 4, 5), accuracy)})
        rows.append(row)
    runs = pd.DataFrame(rows)
    return runs if with_positional else runs[runs["positional"] == "concat"].drop(columns="positional")


def test_long_form_marks_trained_and_beyond():
    long = long_form(synthetic_runs())
    assert len(long) == 6 * 4
    assert list(long[long["key"] == "concat0"]["trained"]) == [True, True, False, False]
    assert list(long[long["key"] == "concat0"]["beyond"]) == [False, False, True, True]
    assert long.loc[(long["key"] == "none1") & (long["length"] == 4), "eval_accuracy"].item() == 0.8


def test_runs_stored_before_the_field_used_the_papers_encoding():
    assert set(long_form(synthetic_runs(with_positional=False))["positional"]) == {"concat"}


def test_summary_numbers_by_hand():
    table = summary(long_form(synthetic_runs())).set_index("positional")
    concat, none, sinusoidal = table.loc["concat"], table.loc["none"], table.loc["sinusoidal"]
    assert concat["runs"] == 2
    assert concat["trained"] == pytest.approx((1 + 1 + 1 + 0.9) / 4)
    assert concat["beyond"] == pytest.approx(((0.5 + 0.7) / 2 + (0.6 + 0.5) / 2) / 2)
    assert concat["beyond_sd"] == pytest.approx(np.std([0.6, 0.55], ddof=1))
    assert concat["longest"] == pytest.approx(0.6)
    assert concat["reach"] == 3, "mean accuracy 0.95 at length 3, 0.55 at 4"
    assert none["trained"] == pytest.approx(0.85) and none["beyond"] == pytest.approx(0.8)
    assert none["beyond_sd"] == 0 and pd.isna(none["reach"]), "not even the shortest length is solved"
    assert sinusoidal["reach"] == 3, "a dip at 4 ends the reach even though 5 is solved again"
    assert sinusoidal["beyond"] == pytest.approx(0.95)


def test_the_report_prints_the_summary_and_a_table_per_target(tmp_path):
    exp = E.length_generalization("ci")
    exp = dataclasses.replace(exp, _results=lambda experiment, store: synthetic_runs())
    report = exp.report(tmp_path / "unused.db")
    assert "trained on lengths 2..3, evaluated beyond on 4..5" in report
    lines = report.splitlines()
    concat = next(line.split() for line in lines if line.split()[:2] == ["parity", "concat"])
    assert concat == ["parity", "concat", "2", "0.975", "0.575", "0.035", "0.600", "3"]
    assert any(line.split()[:2] == ["parity", "none"] and line.split()[-1] == "<NA>" for line in lines)
    assert "parity: mean accuracy by evaluation length (* trained)" in report
    assert next(line.split() for line in lines if line.startswith("4 ")) == ["4", "0.550", "0.800", "0.900"]
    assert next(line.split() for line in lines if line.startswith("2 *")) == ["2", "*", "1.000", "0.900", "1.000"]


# ---- the ci preset from the command line ------------------------------------------------------------
def test_the_ci_preset_from_the_cli_writes_its_store_report_and_figure(tmp_path, capsys):
    from sensiformer.cli import main

    db, png = tmp_path / "r.db", tmp_path / "lengths.png"
    assert main(["reproduce", "length_generalization", "--preset", "ci", "--store", str(db), "--plot", str(png),
                 "--executor", "serial", "--no-progress"]) == 0
    out = capsys.readouterr().out
    exp = E.length_generalization("ci")
    runs = Store(db).runs(sweep=exp.sweep)
    assert len(runs) == 4 and set(runs["positional"]) == {"concat", "none"}
    for length in exp.params["eval_lengths"]:
        assert runs[f"eval_accuracy@{length}"].between(0, 1).all()
    table = summary(long_form(runs))
    assert len(table) == 4
    first_concat = table[(table["target"] == "first") & (table["positional"] == "concat")].iloc[0]
    printed = next(line.split() for line in out.splitlines() if line.split()[:2] == ["first", "concat"])
    assert printed[2:5] == ["1", f"{first_concat['trained']:.3f}", f"{first_concat['beyond']:.3f}"], \
        "the printed report is the summary of the stored runs"
    assert "trained on lengths 2..4, evaluated beyond on 5..6" in out and f"wrote {png}" in out
    assert png.stat().st_size > 10_000
    fig = exp.plot(db)
    assert [ax.get_title() for ax in fig.axes] == ["PARITY", "FIRST"]
    assert {line.get_label() for line in fig.axes[0].lines} == {"concat", "none", "accuracy 0.5"}


def test_the_dry_run_lists_each_runs_encoding(tmp_path, capsys):
    """The paper's encoding is out of the key, not out of the listing: "concat" shows next to "none"."""
    from sensiformer.cli import main

    db = tmp_path / "r.db"
    assert main(["reproduce", "length_generalization", "--preset", "ci", "--store", str(db), "--dry-run"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    header = next(r for r in rows if r[:2] == ["key", "target"])
    column = header.index("positional")
    listed = [r[column] for r in rows if len(r) == len(header) and r[0] != "key"]
    assert listed == ["concat", "none", "concat", "none"] and not db.exists()
