"""Arguments that used to be accepted and silently change a result's meaning (issue 16, point 13)."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import analysis, probes


@pytest.fixture
def model():
    return sf.Transformer(n_positions=5, d_model=8, n_heads=2, n_layers=1, dtype="float64")


@pytest.fixture
def batch():
    x = np.random.default_rng(0).integers(0, 2, size=(16, 5))
    return x, (x.sum(axis=1) % 2).astype(float)


@pytest.mark.parametrize("call", [
    lambda m, x, y: probes.sharpness(m, x, y, exclude=("positonal",)),
    lambda m, x, y: probes.param_norm(m, exclude=("positonal",)),
    lambda m, x, y: probes.distance(m, m, exclude="encoders.layer.*"),
    lambda m, x, y: probes.hessian_trace(m, x, y, samples=1, exclude=("positional", "nonexistent.*")),
    lambda m, x, y: probes.landscape_1d(m, x, y, exclude=("positonal",)),
    lambda m, x, y: probes.tensor_mask(m, exclude=("positonal",)),
], ids=["sharpness", "param_norm", "distance", "hessian_trace", "landscape", "tensor_mask"])
def test_exclude_pattern_matching_nothing_is_refused(model, batch, call):
    with pytest.raises(ValueError, match="matches no parameter"):
        call(model, *batch)


def test_exclude_patterns_that_match_still_work(model):
    # a kind the model lacks is not a typo: norm="none" has no LayerNorm parameters
    bare = sf.Transformer(n_positions=5, d_model=8, n_heads=2, n_layers=1, norm="none")
    assert probes.param_norm(bare, exclude=("positional", "norm_weight")) > 0
    assert probes.param_norm(model, exclude=("encoders.layers.0.*",)) > 0
    assert probes.tensor_mask(model, exclude=()).all()


def test_hessian_eigenvalues_k_beyond_the_parameter_count(model, batch):
    block = "linear_head.*"  # 9 parameters
    with pytest.raises(ValueError, match="k=10 asks for 10 eigenvalues of a Hessian of size 9"):
        probes.hessian_eigenvalues(model, *batch, k=10, block=block)
    with pytest.raises(ValueError, match="size 9"):
        probes.hessian_eigenvalues(model, *batch, k=5, which="both", block=block)
    with pytest.raises(ValueError, match="max_iter=3"):
        probes.hessian_eigenvalues(model, *batch, k=4, block=block, max_iter=3)
    eig = probes.hessian_eigenvalues(model, *batch, k=9, block=block)
    assert eig.values.shape == (9,)


def test_hvp_with_zero_directions_is_empty(model, batch):
    out = probes.hvp(model, *batch, np.zeros((0, model.num_parameters)))
    assert out.shape == (0, model.num_parameters) and out.dtype == model.dtype
    out = probes.hvp(model, *batch, np.zeros((0, 9)), block="linear_head.*")
    assert out.shape == (0, 9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sharpness_overflowing_sigma_is_refused(batch, dtype):
    model = sf.Transformer(n_positions=5, d_model=8, n_heads=2, n_layers=1, dtype=dtype)
    with pytest.raises(FloatingPointError, match="not finite"):
        probes.sharpness(model, *batch, sigma=1e300, repeats=2)
    assert np.isfinite(probes.sharpness(model, *batch, sigma=0.02, repeats=2).value)


def test_model_sensitivity_shows_a_bar_for_long_enumerations(monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "0")
    def table_fn(x):
        return x.sum(axis=1) % 2
    analysis.model_sensitivity(table_fn, 16)
    assert "truth table" in capsys.readouterr().err
    analysis.model_sensitivity(table_fn, 16, progress=False)
    analysis.model_sensitivity(table_fn, 10)  # short: no bar by default
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    analysis.model_sensitivity(table_fn, 16)
    analysis.model_sensitivity(table_fn, 16, progress=True)
    assert capsys.readouterr().err == ""
