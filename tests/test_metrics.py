"""One metric registry for Measure (during training) and a sweep run's final measurement."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import metrics
from sensiformer.sweep import runner
from sensiformer.sweep.config import RunConfig
from sensiformer.sweep.probe_config import FinalMeasurement


@pytest.fixture
def output_mean():
    """A user metric, registered for one test."""
    @metrics.register("output_mean")
    def fn(model, x, y, s):
        return {"output_mean": float(model.forward(x, n_threads=s.n_threads).mean()) + s.extra.get("shift", 0.0)}

    yield fn
    del metrics.METRICS["output_mean"]


def test_a_registered_metric_runs_in_measure_next_to_the_built_in_ones(output_mean):
    model = sf.Transformer(5, d_model=8, seed=0)
    trainer = sf.Trainer(model, sf.targets.Parity(5), batch_size=16, seed=1)
    probe = sf.Measure(every=5, metrics=("loss", "output_mean"), metric_settings={"shift": 10.0})
    history = trainer.fit(10, log_every=5, callbacks=[probe], progress=False)
    rows = history.dropna(subset=["output_mean"])
    assert len(rows) == 2 and (rows["output_mean"] > 9).all() and rows["measure_loss"].notna().all()
    assert "sharpness" not in history


def test_measure_flags_name_the_registered_metrics():
    assert sf.Measure().metrics == ("loss", "sharpness", "blowup", "param_norm")
    assert sf.Measure(sharpness=False, hessian=True, logit_scale=True).metrics == (
        "loss", "blowup", "param_norm", "hessian", "logit_scale")
    with pytest.raises(ValueError, match="registered metrics"):
        sf.Measure(metrics=("loss", "sharpnes"))
    with pytest.raises(ValueError, match="non-empty string"):
        metrics.register("")


def test_the_final_measurement_of_a_run_uses_the_same_registry(monkeypatch):
    monkeypatch.setitem(metrics.METRICS, "param_norm", lambda model, x, y, s: {"param_norm": -1.0})
    cfg = RunConfig(target="parity", n=5, seed=0, steps=5, d_model=8, batch_size=16,
                    final=FinalMeasurement(batches=1, sharpness_repeats=2))
    model, _, trainer, _ = runner._build(cfg, 1)
    out = runner._final_probes(model, trainer, cfg, 1)
    assert out["param_norm"] == -1.0 and {"measure_loss", "sharpness", "blowup_maxs_prod"} <= set(out)
    assert np.isfinite(out["sharpness"])
