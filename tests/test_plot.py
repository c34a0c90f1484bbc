"""Plots render with the Agg backend and carry the expected artists."""

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
    assert len(ax.collections) == 3
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
    ax = plot.length_generalization_ax(df)
    assert len(ax.lines) == 1 and ax.get_xlabel() == "evaluation length"
