"""Plots render with the Agg backend and carry the expected artists."""

import itertools
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402

from sensiformer import plot  # noqa: E402


@pytest.fixture(autouse=True)
def no_show(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("plot functions must never call plt.show()")

    monkeypatch.setattr(plt, "show", refuse)
    yield
    plt.close("all")


def synthetic_runs(seeds=5, slopes=None):
    slopes = slopes or dict(parity=0.01, majority=0.0, first=-0.001, mean=0.0)
    rng = np.random.default_rng(0)
    rows = []
    for t, slope in slopes.items():
        for n in (4, 6, 8, 10):
            for s in range(seeds):
                rows.append(dict(key=f"{t}{n}{s}", status="ok", target=t, n=n, seed=s, eval_loss=1e-5,
                                 converged=not (t == "parity" and n == 10 and s == 0),
                                 sharpness=(0.03 + slope * n + rng.normal(0, 0.002)) / 4,
                                 blowup_maxs_prod=float(np.exp(rng.normal(1 + (n if t == "parity" else 0) / 5))),
                                 param_norm=20 + rng.normal(), lr=1e-3, weight_decay=0.1))
    return pd.DataFrame(rows)


def test_sharpness_vs_length_style():
    runs = synthetic_runs()
    ax = plot.sharpness_vs_length_ax(runs)
    assert len(ax.lines) == 4, "one mean line per target"
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 4, "± 2 SD bands"
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == len(runs) - 1, "every converged run is a dot"
    parity_line = ax.lines[0]
    assert parity_line.get_label() == "PARITY"
    assert np.allclose(parity_line.get_ydata()[0], 4 * runs[(runs.target == "parity") & (runs.n == 4)].sharpness.mean())
    assert ax.get_ylabel() == "sharpness (×4)"
    assert ax.get_legend() is not None


def test_log_axes_and_norm():
    runs = synthetic_runs()
    assert plot.blowup_vs_length_ax(runs).get_yscale() == "log"
    assert plot.norm_vs_length_ax(runs).get_yscale() == "linear"
    ax = plot.tradeoff_ax(runs, target="parity")
    assert ax.get_xscale() == "log" and len(ax.collections[0].get_offsets()) == 19
    assert len(ax.figure.axes) == 2, "a colour bar for n"


def test_slopes_and_counts():
    runs = synthetic_runs(seeds=8)
    s = plot.slopes(runs).set_index("target")
    assert s.loc["parity", "ci_low"] < 0.01 < s.loc["parity", "ci_high"]
    assert s.loc["majority", "ci_low"] < 0 < s.loc["majority", "ci_high"]
    assert s.loc["parity", "runs"] == 31
    counts = plot.converged_counts(runs)
    assert counts.loc["parity", 10] == "7/8" and counts.loc["first", 4] == "8/8"
    report = plot.scaling_report(runs)
    assert "PARITY's slope is positive and its CI lies above" in report
    exact = synthetic_runs(seeds=2, slopes=dict(parity=0.02))
    exact["sharpness"] = (1 + 0.02 * exact["n"]) / 4
    exact["converged"] = True
    s = plot.slopes(exact).iloc[0]
    assert s.slope == pytest.approx(0.02) and s.ci_high - s.ci_low == pytest.approx(0, abs=1e-9)


def test_t_quantile():
    assert plot._t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-3)
    assert plot._t_quantile(0.975, 1000) == pytest.approx(1.9623, abs=1e-3)


def test_scaling_figure_and_empty_input():
    fig = plot.scaling_figure(synthetic_runs())
    assert len(fig.axes) == 3 and fig.axes[1].get_yscale() == "log"
    fig.savefig(__import__("io").BytesIO(), format="png")
    empty = synthetic_runs().iloc[0:0]
    plot.scaling_figure(empty)
    assert plot.slopes(empty).empty
    assert plot.scaling_report(empty) == "no finished runs"


def test_dynamics_axes():
    rows = []
    for key, conv in (("a", 300), ("b", 500)):
        for step in range(100, 1100, 100):
            rows.append(dict(key=key, step=step, weight_decay=0.1, measure_loss=0.2 if step < conv else 0.001,
                             sharpness=0.01 * step, blowup_maxs_prod=1 + step, param_norm=20.0))
    from sensiformer.experiments import aligned_history

    hist = aligned_history(pd.DataFrame(rows))
    assert set(hist.groupby("key")["convergence_step"].first()) == {300.0, 500.0}
    axes = plot.dynamics_axes(hist, weight_decay=0.1)
    assert len(axes) == 4 and axes[2].get_yscale() == "log"
    assert len(axes[0].lines) == 2 + 1 + 1, "two runs, the mean, the convergence line"
    fig = plot.dynamics_figure(hist)
    assert len(fig.axes) == 4


def test_generalization_axes():
    rng = np.random.default_rng(1)
    rows = []
    for kind, m in (("learned", 128), ("learned", 256), ("random", 256), ("learned", 1024)):
        for i in range(5):
            a = 5.0 if kind == "random" else m / 256
            rows.append(dict(key=f"{kind}{m}{i}", status="ok", converged=True, kind=kind, m=m, n=10,
                             average_sensitivity=a + rng.normal(0, 0.05), sharpness=a / 40,
                             train_sharpness=a / 100 if kind == "learned" else math.nan))
    refits = pd.DataFrame(rows)
    ax = plot.generalization_ax(refits)
    assert len(ax.collections) == 3, "m = 2^n (1024) is left out, as in the paper"
    ax = plot.train_sharpness_ax(refits)
    assert len(ax.collections) == 2, "learned completions only: a random one has no training-set sharpness"
    fig = plot.generalization_figure(refits, refits.rename(columns={}))
    assert len(fig.axes) == 3
    refits["converged"] = False  # none converged: drawn hollow rather than an empty figure
    fig = plot.generalization_figure(refits, refits)
    hollow = fig.axes[1].collections
    assert len(hollow) == 3 and all(len(c.get_facecolors()) == 0 or c.get_facecolors()[0][3] == 0 for c in hollow)
    assert len(plot.generalization_ax(refits).collections) == 0, "the paper's filter by default"


def test_length_generalization_ax():
    df = pd.DataFrame([dict(key="a", target="parity", seed=0, length=k, eval_loss=0.1, eval_accuracy=1.0 if k < 5 else 0.5,
                            trained=k < 5) for k in range(2, 9)])
    ax = plot.length_generalization_ax(df)  # stored before the positional field: the paper's encoding
    assert [line.get_label() for line in ax.lines] == ["concat", "accuracy 0.5"]
    assert ax.get_xlabel() == "evaluation length $n$" and ax.get_title() == "PARITY"


def length_generalization_long_form(positionals=("concat", "none"), targets=("parity", "first"), seeds=3):
    return pd.DataFrame([dict(key=f"{t}{p}{s}", target=t, positional=p, seed=s, length=k, eval_loss=0.1,
                              eval_accuracy=1.0 if k <= 4 or p == "none" else 0.5 + 0.1 * s, trained=k <= 4,
                              beyond=k > 4)
                         for t in targets for p in positionals for s in range(seeds) for k in range(2, 9)])


def test_length_generalization_figure_has_a_panel_per_target_and_a_line_per_encoding():
    from sensiformer.sweep.config import POSITIONALS

    fig = plot.length_generalization_figure(length_generalization_long_form(POSITIONALS), title="T")
    assert [ax.get_title() for ax in fig.axes] == ["PARITY", "FIRST"]
    for ax in fig.axes:
        drawn = [line for line in ax.lines if line.get_label() in POSITIONALS]
        assert [line.get_label() for line in drawn] == list(POSITIONALS), "every encoding, in the engine's order"
        assert len({(line.get_color(), str(line.get_linestyle()), line.get_marker()) for line in drawn}) == len(drawn)
        shaded = [p for p in ax.patches if p.get_label() == "trained lengths"]
        x = ax.transData.inverted().transform(shaded[0].get_verts())[:, 0]  # a Polygon or a Rectangle
        assert len(shaded) == 1 and x.min() == pytest.approx(1.5) and x.max() == pytest.approx(4.5)
        assert assert_readable(ax, "x") and all(float(t).is_integer() for t in assert_readable(ax, "x"))
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [*POSITIONALS, "trained lengths", "accuracy 0.5"]
    assert "the trained lengths (2..4)" in " ".join(fig.get_suptitle().split())


def test_length_generalization_ax_needs_a_target_when_there_are_several():
    with pytest.raises(ValueError, match="target="):
        plot.length_generalization_ax(length_generalization_long_form())
    ax = plot.length_generalization_ax(length_generalization_long_form(), target="first")
    assert ax.get_title() == "FIRST"


def test_an_encoding_the_plot_does_not_know_gets_its_own_colour():
    fig = plot.length_generalization_figure(length_generalization_long_form(("concat", "alibi", "xpos")))
    colors = {line.get_label(): line.get_color() for line in fig.axes[0].lines}
    assert len({colors["concat"], colors["alibi"], colors["xpos"]}) == 3


# ---- readability: ticks, legends, captions, bands ---------------------------------------------------
def tick_labels(ax, axis):
    """The drawn major tick labels of ``ax.xaxis`` or ``ax.yaxis``: (text, window extent) pairs."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    target = getattr(ax, f"{axis}axis")
    lo, hi = sorted(target.get_view_interval())
    ticks = [t for t in target.get_major_ticks() if lo * (1 - 1e-9) <= t.get_loc() <= hi * (1 + 1e-9)]
    labels = [label for t in ticks for label in (t.label1, t.label2) if label.get_visible() and label.get_text()]
    return [(label.get_text(), label.get_window_extent(renderer)) for label in labels]


def assert_readable(ax, axis, at_least=2):
    labels = tick_labels(ax, axis)
    assert len(labels) >= at_least, f"too few tick labels: {[t for t, _ in labels]}"
    overlapping = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(labels, 2) if box_a.overlaps(box_b)]
    assert not overlapping, f"overlapping tick labels {overlapping} of {[t for t, _ in labels]}"
    return [t for t, _ in labels]


@pytest.mark.parametrize("low, high", [(100, 5000), (3, 4.5), (2, 9), (1, 1e4), (0.5, 2e8), (10, 60)])
def test_log_axis_tick_labels_never_overlap(low, high):
    """The tradeoff figure once labelled a 100..5000 blowup axis "100200500100020005000"."""
    runs = synthetic_runs()
    runs["blowup_maxs_prod"] = np.geomspace(low, high, len(runs))
    fig = plot.tradeoff_figure(runs)
    for ax in fig.axes[:2]:  # the two panels (the colour bar comes last)
        assert ax.get_xscale() == "log"
        assert_readable(ax, "x", at_least=1 if high / low < 3 else 2)
    ax = plot.blowup_vs_length_ax(runs)
    assert_readable(ax, "y", at_least=1 if high / low < 3 else 2)


def test_integer_lengths_have_integer_ticks():
    runs = synthetic_runs()
    runs = runs[runs["n"].isin([4, 6])]  # a short range, where matplotlib would put ticks at 4.5, 5.0, 5.5
    ax = plot.sharpness_vs_length_ax(runs)
    labels = assert_readable(ax, "x")
    assert all(float(t).is_integer() for t in labels), labels
    fig = plot.tradeoff_figure(runs)
    colorbar = fig.axes[-1]
    labels = assert_readable(colorbar, "y")
    assert all(float(t).is_integer() for t in labels), labels


def test_scaling_figure_has_one_legend_and_a_caption():
    fig = plot.scaling_figure(synthetic_runs(), title="scaling, preset quick")
    assert all(ax.get_legend() is None for ax in fig.axes), "no per-panel legends"
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["PARITY", "MAJORITY", "FIRST", "MEAN"]
    caption = fig.get_suptitle()
    assert caption.startswith("scaling, preset quick\n")
    caption = " ".join(caption.split())
    assert "converged runs only (eval MSE < 1e-3)" in caption and "mean ± 2 SD across seeds" in caption


def test_missing_targets_are_named_not_left_blank():
    runs = synthetic_runs(seeds=2)
    runs.loc[runs["target"] == "parity", "converged"] = False
    fig = plot.scaling_figure(runs)
    assert "PARITY (0/8)" in " ".join(fig.get_suptitle().split())
    assert "PARITY n/a" in fig.axes[0].get_title(loc="left"), "no NaN slope"
    fig = plot.tradeoff_figure(runs)
    assert any("PARITY (0/8)" in t.get_text() for t in fig.axes[0].texts), "the empty PARITY panel says why"
    ax = plot.metric_vs_length_ax(runs, metric="param_norm", targets=["parity"])
    assert any("no converged run" in t.get_text() for t in ax.texts)


def test_every_figure_has_a_caption_with_its_title():
    runs = synthetic_runs()
    hist = pd.DataFrame([dict(key="a", step=s, weight_decay=0.1, measure_loss=0.2 if s < 300 else 0.001,
                              sharpness=0.01, blowup_maxs_prod=2.0, param_norm=20.0) for s in range(100, 600, 100)])
    from sensiformer.experiments import aligned_history

    long_form = pd.DataFrame([dict(key=f"a{s}", target="parity", seed=s, length=k, eval_loss=0.1,
                                   eval_accuracy=1.0, trained=k < 4) for s in range(2) for k in range(2, 6)])
    init = pd.DataFrame([dict(init=i, n=n, seed=s, model_as=n / 3, model_k0_fraction=0.1)
                         for i in ("pytorch", "gaussian") for n in (4, 6) for s in range(2)])
    figures = [plot.scaling_figure(runs, title="T"), plot.tradeoff_figure(runs, title="T"),
               plot.dynamics_figure(aligned_history(hist), title="T"), plot.scratchpad_figure(runs, title="T"),
               plot.length_generalization_figure(long_form, title="T"), plot.init_sensitivity_figure(init, title="T")]
    for fig in figures:
        assert fig.get_suptitle().startswith("T\n"), fig.get_suptitle()
    assert len(figures[-1].legends) == 1 and figures[-1].axes[0].get_legend() is None


def test_length_generalization_band_stays_in_unit_interval():
    accuracy = {0: 1.0, 1: 0.55, 2: 1.0}  # mean ± 2 SD would reach 1.26 and 0.44
    df = pd.DataFrame([dict(key=f"r{s}", target="parity", seed=s, length=k, eval_loss=0.1,
                            eval_accuracy=accuracy[s] if k > 4 else 1.0, trained=k <= 4)
                       for s in range(3) for k in range(2, 9)])
    fig = plot.length_generalization_figure(df)
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    y = np.concatenate([path.vertices[:, 1] for path in bands[0].get_paths()])
    assert y.min() >= 0 and y.max() <= 1 and y.max() == 1.0
    assert "mean ± 2 SD across seeds clipped to [0, 1]" in " ".join(fig.get_suptitle().split())


def test_train_sharpness_panel_plots_only_what_its_label_says():
    rows = [dict(key=f"{kind}{i}", status="ok", converged=True, kind=kind, m=256, n=10, average_sensitivity=2.0 + i,
                 sharpness=0.01 * (i + 1), train_sharpness=0.002 * (i + 1) if kind == "learned" else math.nan)
            for kind in ("learned", "random") for i in range(3)]
    fig = plot.generalization_figure(pd.DataFrame(rows), pd.DataFrame(rows))
    ax = fig.axes[2]
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(points) == 3, "random completions have no training-set sharpness: not drawn"
    # the official plot's axes (issue 17 point 4): sharpness x4 on x, training-set sharpness (not x4) on y
    assert np.allclose(points[:, 0], [0.04, 0.08, 0.12]) and np.allclose(points[:, 1], [0.002, 0.004, 0.006])
    assert ax.get_xlabel() == "sharpness (×4)" and "training set" in ax.get_ylabel()
    assert "learned completions only" in " ".join(fig.get_suptitle().split())
    assert len(fig.legends) == 1 and all(a.get_legend() is None for a in fig.axes)


def test_scratchpad_axes_log2_lengths_and_data_fitted_y():
    runs = pd.DataFrame([dict(key=f"{n}{s}", status="ok", converged=True, target="parity", n=n, seed=s,
                              sharpness=0.004, blowup_official_encoder_maxs_prod=3.0,
                              blowup_official_decoder_maxs_prod=4.0, param_norm=40 + n / 16 + s)
                         for n in (4, 8, 16, 32, 64, 128, 256, 512, 1024) for s in range(2)])
    fig = plot.scratchpad_figure(runs)
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        labels = assert_readable(ax, "x", at_least=3)
        assert all(float(t).is_integer() for t in labels), labels
    norm = fig.axes[3]
    assert norm.get_ylim()[0] > 30, "a y axis from 0 would flatten the norm's growth from 40 to 105"


@pytest.mark.parametrize("store_kind", ["empty", "other sweep"])
def test_cli_plot_without_matching_runs_fails_and_writes_nothing(tmp_path, capsys, store_kind):
    from sensiformer.cli import main
    from sensiformer.sweep import FinalMeasurement, RunConfig, Store, run_configs

    db, png = tmp_path / "r.db", tmp_path / "fig.png"
    store = Store(db)
    if store_kind == "other sweep":  # runs of another experiment: scaling/ci matches nothing
        tiny = RunConfig(n=3, d_model=8, batch_size=8, steps=2, final=FinalMeasurement(batches=1), eval_batches=1)
        run_configs([tiny], store, executor="serial", progress=False, sweep="mine")
    assert main(["plot", "scaling", "--preset", "ci", "--store", str(db), "--out", str(png)]) != 0
    err = capsys.readouterr().err
    assert "no finished runs of scaling/ci" in err and "no figure written" in err
    assert ("mine" in err) == (store_kind == "other sweep"), "names the sweeps the store holds"
    assert not png.exists()


def test_init_sensitivity_bands_stay_in_range_and_caption_says_pooled_widths():
    rows = [dict(init="gaussian", n=n, seed=s, d_model=d, n_layers=2, model_as=n / 2 * (0.05 if s else 1.9),
                 model_k0_fraction=0.95 if s else 0.0) for n in (4, 6) for s in range(3) for d in (16, 64)]
    fig = plot.init_sensitivity_figure(pd.DataFrame(rows))
    for ax, high in zip(fig.axes, (2.0, 1.0)):
        band = next(c for c in ax.collections if isinstance(c, PolyCollection))
        y = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        assert y.min() >= 0 and y.max() <= high
    assert "across seeds and d_model=16,64" in " ".join(fig.get_suptitle().split())


def test_frontier_shift_recovers_how_the_norm_needed_at_a_given_blowup_moves_with_n():
    """The tradeoff report's statistic (issue 17 point 4): norm = a + b log10(blowup) + c n per target."""
    rng = np.random.default_rng(0)
    n = rng.integers(4, 11, size=60)
    blowup = 10 ** rng.uniform(0, 3, size=60)
    rows = dict(key=[str(i) for i in range(60)], status="ok", converged=True, n=n, blowup_maxs_prod=blowup,
                param_norm=12 - 3 * np.log10(blowup) + 0.5 * n + rng.normal(scale=0.2, size=60))
    parity = pd.DataFrame(rows).assign(target="parity")
    flat = pd.DataFrame(rows).assign(target="mean", param_norm=12 - 3 * np.log10(blowup) + rng.normal(scale=0.2, size=60))
    table = plot.frontier_shift(pd.concat([parity, flat])).set_index("target")
    assert table.loc["parity", "ci_low"] < 0.5 < table.loc["parity", "ci_high"] and table.loc["parity", "ci_low"] > 0.3
    assert table.loc["mean", "ci_low"] < 0 < table.loc["mean", "ci_high"]
    assert table.loc["parity", "per_decade"] == pytest.approx(-3, abs=0.2) and table.loc["parity", "runs"] == 60


def test_each_experiment_owns_its_figure_and_plot_keeps_the_old_names():
    """plot.py is the shared styling; a figure lives in its experiment's module, still reachable from plot."""
    import importlib
    import subprocess
    import sys

    for name, module in plot.MOVED.items():
        owner = importlib.import_module(f"sensiformer.experiments.{module}")
        assert getattr(plot, name) is getattr(owner, name), name
        assert name in dir(plot)
    with pytest.raises(AttributeError, match="no_such_figure"):
        plot.no_such_figure
    code = "import sys, sensiformer.plot; print(any(m.startswith('sensiformer.experiments') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "importing plot imports no experiment (they import plot)"
