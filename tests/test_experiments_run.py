"""Every experiment's ci preset runs end to end into a real store; completions; sensitivity."""

import itertools

import numpy as np
import pandas as pd
import pytest

from sensiformer import experiments as E
from sensiformer import sweep
from sensiformer.experiments.generalization import completion_manifest
from sensiformer.sweep import Store, hex_to_table, table_to_hex


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("experiments") / "results.db")


def test_scaling_ci(store):
    exp = E.scaling("ci")
    sweep.run(exp, store=store, executor="serial", progress=False)
    runs = exp.results(store)
    assert len(runs) == len(exp.configs()) == 12
    for col in ("eval_loss", "converged", "eval_exact", "sharpness", "sharpness_stderr", "blowup_maxs_prod",
                "blowup_means_prod", "blowup_maxs_sum", "blowup_means_sum", "param_norm", "label_scale",
                "git_commit", "cpu_path", "n_threads"):
        assert col in runs, col
    assert runs["eval_exact"].all() and set(runs["label_scale"]) == {"01"}
    assert (runs["converged"] == (runs["eval_loss"] < 1e-3)).all()
    report = exp.report(store)
    assert "slope" in report and "converged runs / finished runs" in report
    fig = exp.plot(store)
    assert len(fig.axes) == 3
    from sensiformer import plot

    assert np.isfinite(plot.slopes(runs).set_index("target").loc["parity", "slope"]), "the ci figure has PARITY's slope"
    assert "scaling, preset ci" in fig.get_suptitle()
    again = sweep.run_configs(exp.configs(), store, executor="serial", progress=False)
    assert again.executed == 0 and again.skipped == 12


def test_scaling_long_ci(store):
    exp = E.scaling("ci", variant="long")
    sweep.run(exp, store=store, executor="serial", progress=False)
    runs = exp.results(store)
    assert len(runs) == 4 and set(runs["d_model"]) == {4}
    assert not runs[runs["n"] > 16]["eval_exact"].any(), "n > 16: evaluated on fresh batches"


def test_tradeoff_ci(store):
    exp = E.tradeoff("ci")
    sweep.run(exp, store=store, executor="serial", progress=False)
    runs = exp.results(store)
    assert len(runs) == 4 and set(runs["part"]) == {"tradeoff_2", "tradeoff_3"}
    assert "converged" in exp.report(store)
    assert runs[runs["target"] == "parity"]["converged"].all(), "the ci figure's PARITY panel is not blank"
    exp.plot(store)


def test_dynamics_ci(store):
    exp = E.dynamics("ci")
    sweep.run(exp, store=store, executor="serial", progress=False)
    hist = E.aligned_history(exp.history(store))
    probed = hist.dropna(subset=["sharpness"])
    assert len(probed) == 400 // 50
    for col in ("measure_loss", "sharpness", "blowup_maxs_prod", "param_norm"):
        assert probed[col].notna().all()
    conv = hist["convergence_step"].iloc[0]
    assert conv == probed[probed["measure_loss"] < 0.01]["step"].min()
    assert exp.results(store)["convergence_step"].iloc[0] == conv
    assert (hist["steps_after_convergence"] == hist["step"] - conv).all()
    assert "1/1 converged" in exp.report(store) and "1 of 1 stored runs pass the official filter" in exp.report(store)
    fig = exp.plot(store)
    assert len(fig.axes) == 4


def test_dynamics_keeps_only_runs_that_pass_the_official_filter():
    """Issue 17 point 2: a run that reached the convergence step on its measurement batch but whose eval
    loss is >= 1e-3 (or that did not finish) is dropped from the figure and the report, as in the official
    plots; the report says how many passed."""
    import importlib

    D = importlib.import_module("sensiformer.experiments.dynamics")  # the package exports the function

    hist = pd.DataFrame(dict(key=["a"] * 3 + ["b"] * 3 + ["c"] * 3, step=[100, 200, 300] * 3,
                             measure_loss=[0.5, 0.005, 0.001] * 3, weight_decay=0.1))
    runs = pd.DataFrame(dict(key=["a", "b", "c"], converged=[True, False, True], status=["ok", "ok", "failed"],
                             eval_loss=[1e-4, 5e-3, 1e-4]))

    class Stored:
        sweep = "dynamics/test"

        def results(self, store):
            return runs

        def history(self, store):
            return hist

    kept = D.filtered_history(Stored(), None)
    assert set(kept["key"]) == {"a"} and (kept["convergence_step"] == 200).all()
    assert "1 of 3 stored runs pass the official filter" in D._report(Stored(), None)


def test_generalization_ci(store):
    exp = E.generalization("ci")
    sweep.run(exp, store=store, executor="serial", progress=False)
    fits = store.runs(sweep=exp.stage_sweep("fit"), artifacts=True)
    assert len(fits) == 4 and fits["predictions"].notna().all()
    manifest = exp.manifest(store)
    assert len(manifest) >= 1 and set(manifest["kind"]) <= {"learned", "random"}
    refits = exp.results(store)
    assert len(refits) >= 1 and (refits["target"] == "table").all()
    for r in refits.itertuples():
        assert r.average_sensitivity == pytest.approx(E.average_sensitivity(hex_to_table(r.target_table, 6)))
    learned = refits[refits["kind"] == "learned"]
    assert learned["train_sharpness"].notna().all()
    report = exp.report(store)
    assert "completions" in report
    for (kind, m), g in refits.groupby(["kind", "m"]):
        assert f"{kind:8s} m={m:5d}: {int(g['converged'].sum())}/{len(g)} converged" in report
    exp.plot(store)


def test_scratchpad_ci(store, tmp_path):
    exp = E.scratchpad("ci")
    sweep.run(exp, store=store, executor="serial", progress=False)
    runs = exp.results(store)
    assert len(runs) == 2 and set(runs["model"]) == {"scratchpad"} and set(runs["n"]) == {4, 8}
    for col in ("sharpness", "blowup_official_encoder_maxs_prod", "blowup_official_decoder_maxs_prod", "param_norm",
                "autoregressive_accuracy", "eval_autoregressive_accuracy"):
        assert runs[col].notna().all(), col
    assert (runs["converged"] == (runs["autoregressive_accuracy"] > 0.999)).all()
    assert runs["converged"].all(), "the ci preset's runs learn the prefix parities"
    report = exp.report(store)
    assert "encoder LayerNorm blowup" in report and "2 runs over 2 lengths" in report
    fig = exp.plot(store, path=tmp_path / "fig11.png")
    assert len(fig.axes) == 4 and (tmp_path / "fig11.png").stat().st_size > 10_000
    sharp_panel = fig.axes[0]
    assert np.allclose(sorted(sharp_panel.collections[-1].get_offsets()[:, 1]), sorted(4 * runs["sharpness"])), \
        "the sharpness panel shows every converged run, x4"


def test_length_generalization_ci(store):
    exp = E.length_generalization("ci")
    sweep.run(exp, store=store, executor="serial", progress=False)
    runs = exp.results(store)
    for length in (2, 3, 4, 5, 6):
        assert runs[f"eval_accuracy@{length}"].notna().all()
    assert "accuracy by evaluation length" in exp.report(store)
    exp.plot(store)


def test_init_sensitivity_ci(store):
    exp = E.init_sensitivity("ci")
    sweep.run(exp, store=store, executor="serial", progress=False)
    runs = exp.results(store)
    assert len(runs) == 4 and set(runs["init"]) == {"pytorch", "gaussian"} and (runs["steps_done"] == 0).all()
    arts = store.runs(sweep=exp.sweep, artifacts=True)
    for r in arts.itertuples():
        profile = np.array(r.sensitivity_profile)
        assert profile.sum() == 2**r.n
        assert r.model_as == pytest.approx((profile * np.arange(r.n + 1)).sum() / 2**r.n)
        assert r.model_k0_fraction == profile[0] / 2**r.n
    assert "relative_to_random" in exp.report(store)
    assert len(exp.plot(store).axes) == 2


def test_cli_reproduce_show_plot(tmp_path, capsys):
    from sensiformer.cli import main

    db, png = tmp_path / "r.db", tmp_path / "s.png"
    assert main(["reproduce", "scaling", "--preset", "ci", "--set", "targets=parity,first", "--store", str(db),
                 "--plot", str(png), "--executor", "serial", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "PARITY" in out and "finished in" in out and png.stat().st_size > 10_000
    assert main(["show", str(db)]) == 0
    assert "6 finished runs" in capsys.readouterr().out
    assert main(["show", str(db), "--export", str(tmp_path / "runs.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 6
    assert main(["plot", "scaling", "--preset", "ci", "--set", "targets=parity,first", "--store", str(db),
                 "--out", str(tmp_path / "p.png")]) == 0
    with pytest.raises(SystemExit) as exit_info:  # argparse: the experiment is one of its choices
        main(["reproduce", "nonsense", "--store", str(db)])
    assert exit_info.value.code == 2


def test_cli_sweep_from_a_jsonl_file(tmp_path, capsys, monkeypatch):
    import json

    from sensiformer.cli import main
    from sensiformer.sweep import FinalMeasurement, RunConfig

    path = tmp_path / "configs.jsonl"
    path.write_text("\n".join(json.dumps(RunConfig(n=4, d_model=8, batch_size=16, steps=20, seed=s,
                                                   final=FinalMeasurement(batches=1), eval_batches=1).to_dict())
                              for s in range(2)))
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert main(["sweep", str(path), "--store", str(tmp_path / "r.db"), "--executor", "serial", "--no-progress",
                 "--run-progress"]) == 0
    assert len(Store(tmp_path / "r.db")) == 2
    err = capsys.readouterr().err
    assert "parity n=4 seed=1" in err and "20/20" in err, "a bar per run, not the sweep's"


# ---- sensitivity and completions --------------------------------------------------------------------
def _fourier_as(table):
    n = int(np.log2(len(table)))
    f = 2 * np.asarray(table, float) - 1
    total = 0.0
    for s in range(2**n):
        chi = np.array([(-1) ** bin(x & s).count("1") for x in range(2**n)])
        total += bin(s).count("1") * np.mean(f * chi) ** 2
    return total


def test_average_sensitivity():
    from sensiformer import targets
    from sensiformer.targets import all_inputs

    for n in (1, 4, 7):
        assert E.average_sensitivity(targets.Parity(n)(all_inputs(n))) == n
    maj = {4: 1.5, 5: 1.875, 10: 2.461}
    for n, v in maj.items():
        assert E.average_sensitivity(targets.Majority(n)(all_inputs(n))) == pytest.approx(v, abs=1e-3)
    rng = np.random.default_rng(0)
    tables = rng.integers(0, 2, (5, 32))
    assert np.allclose(E.average_sensitivity(tables), [_fourier_as(t) for t in tables])
    assert E.average_sensitivity(targets.RandomFunction(10, seed=0).table) == pytest.approx(5.0, abs=0.3)


def test_completion_manifest_follows_the_official_recipe():
    from sensiformer import targets

    rows = []
    for m, ts, seed in itertools.product((16, 32), (0, 1), (0, 1)):
        truth = targets.RandomFunction(6, seed=ts).table
        preds = truth.copy()
        if (m, ts, seed) == (32, 1, 1):
            preds[targets.restricted_subset(6, m, seed=seed)[0]] = 1 - preds[targets.restricted_subset(6, m, seed=seed)[0]]
        rows.append(dict(key=f"k{m}{ts}{seed}", seed=seed, target_seed=ts, train_subset=m,
                         predictions=table_to_hex(preds)))
    fits = pd.DataFrame(rows).sample(frac=1, random_state=3)  # the manifest must not depend on row order
    man = completion_manifest(fits, random_completion_sizes=(16,), n=6, subset_sizes=(16, 32))
    assert len(man) == 4 + 4 + 3, "the run that misses a training label is dropped"
    assert list(man["group"]) == ["16_random"] * 8 + ["32"] * 3
    assert list(man["kind"][:8]) == ["learned"] * 4 + ["random"] * 4
    legacy = np.random.RandomState(0)
    for e in man[man["kind"] == "random"].itertuples():
        assert e.random_seed == legacy.randint(0, 10000)
        table = hex_to_table(e.table, 6)
        subset = targets.restricted_subset(6, e.m, seed=e.seed)
        expected = targets.RandomFunction(6, seed=e.random_seed).table.copy()
        expected[subset] = targets.RandomFunction(6, seed=e.target_seed).table[subset]
        assert np.array_equal(table, expected)
    assert man["average_sensitivity"].between(0, 6).all()
    again = completion_manifest(fits.sort_values("key"), random_completion_sizes=(16,), n=6, subset_sizes=(16, 32))
    assert again.equals(man)
