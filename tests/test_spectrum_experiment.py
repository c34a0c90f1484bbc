"""experiments.spectrum(): its grids, the hidden-progress summary, and the ci preset end to end from the CLI."""

import importlib

import numpy as np
import pandas as pd
import pytest

from sensiformer import experiments as E
from sensiformer.sweep import Dynamics, RunConfig, Store
from sensiformer.sweep.runner import _target

S = importlib.import_module("sensiformer.experiments.spectrum")  # the package exports the function


def test_paper_and_quick_grids():
    configs = E.spectrum("paper").configs()
    assert len(configs) == 3 * 10
    assert {c.target for c in configs} == {"parity", "majority", "sparse_parity"}
    assert all(c.dynamics.spectrum and c.n == 16 and c.d_model == 128 and c.batch_size == 1024 and c.lr == 3e-4
               and c.dynamics.every == 100 and c.dynamics.repeats == 500 and not c.final.enabled for c in configs)
    assert {c.target_bits for c in configs} == {(), (2, 7, 13)}
    assert len({c.key for c in configs}) == 30
    quick = E.spectrum("quick").configs()
    assert len(quick) == 24 and {c.n for c in quick} == {8}
    with pytest.raises(ValueError, match="target_bits"):
        E.spectrum("ci", sparse_bits=(0, 9)).configs()  # a position beyond n


def test_sparse_parity_runs_train_on_the_sparse_parity():
    cfg = RunConfig(target="sparse_parity", n=6, target_bits=(1, 4))
    x = np.random.default_rng(0).integers(0, 2, (50, 6), dtype=np.uint8)
    np.testing.assert_array_equal(_target(cfg)(x), (x[:, 1] ^ x[:, 4]).astype(float))
    with pytest.raises(ValueError, match="target_bits is only used with target='sparse_parity'"):
        RunConfig(target="parity", n=6, target_bits=(1,))
    with pytest.raises(ValueError, match="dynamic_spectrum"):
        RunConfig(model="scratchpad", target="parity", n=4, dynamics=Dynamics(spectrum=True))


def test_hidden_progress_finds_the_plateau_and_the_growth_over_it():
    n = 3
    spectra = {"parity": np.eye(n + 1)[n]}  # PARITY: all weight at degree 3, constant predictor's loss 0.25
    steps = [10, 20, 30, 40, 50]
    loss = [0.30, 0.25, 0.24, 0.10, 0.005]  # below 0.9 x 0.25 from step 40
    w3 = [1e-8, 1e-6, 1e-4, 0.3, 0.99]
    rows = [dict(key="a", target="parity", seed=0, step=s, measure_loss=l, fourier_weight_0=0.01, fourier_weight_1=0.0,
                 fourier_weight_2=0.0, fourier_weight_3=w) for s, l, w in zip(steps, loss, w3)]
    table = S.hidden_progress(pd.DataFrame(rows), spectra, n)
    r = table.iloc[0]
    assert r["degree"] == 3 and r["plateau_end"] == 30 and r["convergence_step"] == 50
    assert r["growth"] == pytest.approx(1e4) and r["share_at_plateau_end"] == pytest.approx(1e-4 / (1e-4 + 0.01))
    assert r["final_share"] == pytest.approx(0.99 / 1.0)
    assert S.constant_loss(np.array([0.2, 0.8])) == pytest.approx(0.2), "variance = weight above degree 0, / 4"


def test_ci_preset_from_the_cli_writes_its_store_report_and_figure(tmp_path, capsys):
    from sensiformer.cli import main

    db, png = tmp_path / "r.db", tmp_path / "spectrum.png"
    assert main(["reproduce", "spectrum", "--preset", "ci", "--store", str(db), "--plot", str(png), "--executor",
                 "serial", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "W_k" in out and "PARITY (k=5" in out and "SPARSE PARITY (k=2" in out and "MAJORITY (k=1" in out
    assert png.stat().st_size > 50_000
    exp = E.spectrum("ci")
    hist = Store(db).history(sweep=exp.sweep)
    probed = hist.dropna(subset=["fourier_weight_0"])
    assert set(probed["target"]) == {"parity", "majority", "sparse_parity"} and len(probed) == 3 * 600 // 50
    columns = ["model_as", "model_as_real", "sharpness", "blowup_maxs_prod"] + [f"fourier_weight_{k}" for k in range(6)]
    for col in columns:
        assert probed[col].notna().all(), col
    last = probed.sort_values("step").groupby("target").last()
    assert last.loc["sparse_parity", "fourier_weight_2"] > 0.9, "the ci run learns its sparse parity"
    assert last.loc["parity", "model_as"] == 5.0
    fig = exp.plot(Store(db))
    assert len(fig.axes) == 5 * 3 + 1  # the panels and the degree colour bar
    assert "spectrum, preset ci" in fig.get_suptitle()
    assert [ax.get_title() for ax in fig.axes[:3]] == ["PARITY (1/1 runs converged)", "MAJORITY (1/1 runs converged)",
                                                       "SPARSE PARITY (1/1 runs converged)"]


def test_figure_draws_the_mean_share_per_degree_and_says_when_a_target_has_no_run():
    from sensiformer import plot

    n = 2
    spectra = {"parity": np.eye(n + 1)[n], "majority": np.array([0.0, 1.0, 0.0])}
    rows = [dict(key=f"r{s}", target="parity", seed=s, step=step, measure_loss=0.2, model_as=1.0, model_as_real=0.5,
                 sharpness=0.01, blowup_maxs_prod=1.0, fourier_weight_0=1.0, fourier_weight_1=0.0,
                 fourier_weight_2=float(s + 1)) for s in range(2) for step in (10, 20)]
    fig = plot.spectrum_figure(pd.DataFrame(rows), spectra, n=n, runs_labels={"parity": "2/2 runs converged"},
                               title="T")
    assert fig.get_suptitle().startswith("T\n") and len(fig.legends) == 1
    top = fig.axes[0]
    assert top.get_title() == "PARITY (2/2 runs converged)"
    # shares of degree 2: 1/2 and 2/3 in the two runs, so the stacked top edge of degree 1 is 1 - 7/12
    edges = [np.asarray(c.get_paths()[0].vertices)[:, 1].max() for c in top.collections]
    assert edges[1] == pytest.approx(1 - 7 / 12) and edges[2] == pytest.approx(1.0)
    assert any("no run to draw" in t.get_text() for t in fig.axes[1].texts), "the MAJORITY column says why it is empty"


def test_share_panel_draws_a_plain_training_history():
    import sensiformer as sf
    from sensiformer import plot

    model = sf.Transformer(4, d_model=8, seed=0)
    history = sf.Trainer(model, sf.targets.Parity(4), batch_size=16, seed=0).fit(
        40, log_every=10, progress=False, callbacks=[sf.Measure(every=20, spectrum=True, repeats=2)])
    ax = plot.spectrum_share_ax(history)
    assert len(ax.collections) == 5  # degrees 0..4
    tops = np.asarray(ax.collections[-1].get_paths()[0].vertices)[:, 1]
    assert tops.max() == pytest.approx(1.0) and ax.get_xlabel() == "training step"
