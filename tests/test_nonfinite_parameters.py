"""Non-finite parameters written through the writable views (issue 16, point 10) give a clear
error naming the tensor at every entry point that would otherwise return NaN or ordinary-looking
results: saving, evaluation, decoding and every probe."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import analysis, probes


def _poisoned(model, index=5, value=np.nan):
    model.flat[index] = value
    return model


def _name_of(model, index):
    return next(t["name"] for t in model.tensor_info if t["offset"] <= index < t["offset"] + t["size"])


@pytest.fixture
def encoder():
    return sf.Transformer(n_positions=6, d_model=8, n_heads=2, n_layers=1, dtype="float64")


@pytest.fixture
def batch():
    x = np.random.default_rng(0).integers(0, 2, size=(16, 6))
    return x, x.sum(axis=1) % 2


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_save_refuses_and_leaves_no_file(encoder, tmp_path, value):
    _poisoned(encoder, 5, value)
    with pytest.raises(FloatingPointError, match=_name_of(encoder, 5)):
        encoder.save(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_error_names_the_tensor_and_index(encoder):
    last = encoder.num_parameters - 1  # linear_head.bias
    _poisoned(encoder, last)
    with pytest.raises(FloatingPointError, match=r"'linear_head.bias'.*1 of 1"):
        encoder.require_finite("test")


def test_evaluate_refuses(encoder):
    trainer = sf.Trainer(encoder, sf.targets.Parity(6), batch_size=8)
    _poisoned(encoder)
    with pytest.raises(FloatingPointError, match="evaluate"):
        trainer.evaluate()


@pytest.mark.parametrize("probe", [
    lambda m, x, y: probes.sharpness(m, x, y, repeats=2),
    lambda m, x, y: probes.ln_blowup(m, x),
    lambda m, x, y: probes.attention_logit_scale(m, x),
    lambda m, x, y: probes.hvp(m, x, y, np.ones(m.num_parameters)),
    lambda m, x, y: probes.hessian_eigenvalues(m, x, y, k=1, max_iter=3),
    lambda m, x, y: probes.hessian_trace(m, x, y, samples=2),
    lambda m, x, y: probes.hessian_density(m, x, y, probes=1, steps=2),
    lambda m, x, y: probes.hessian_matrix(m, x, y, block="linear_head.*"),
    lambda m, x, y: probes.landscape_1d(m, x, y, alphas=[0.0, 1.0]),
    lambda m, x, y: probes.landscape_2d(m, x, y, alphas=[0.0], betas=[0.0]),
    lambda m, x, y: probes.worst_case_sharpness(m, x, y, rho=0.1, steps=1, restarts=1),
    lambda m, x, y: analysis.model_sensitivity(m, 6),
    lambda m, x, y: analysis.model_sensitivity(m, 6, exact=False, samples=16),
    lambda m, x, y: analysis.truth_table(m, 6),
], ids=["sharpness", "ln_blowup", "attention_logits", "hvp", "eigenvalues", "trace", "density", "matrix",
        "landscape_1d", "landscape_2d", "worst_case", "model_sensitivity", "sensitivity_mc", "truth_table"])
def test_every_probe_refuses(encoder, batch, probe):
    _poisoned(encoder)
    with pytest.raises(FloatingPointError, match=_name_of(encoder, 5)):
        probe(encoder, *batch)


def test_seq2seq_generate_evaluate_and_probes_refuse():
    model = sf.Seq2SeqTransformer(n_positions=4, d_model=8, n_heads=2, n_layers=1, dtype="float64")
    trainer = sf.Trainer(model, sf.targets.PrefixParity(4), batch_size=8)
    x = np.random.default_rng(1).integers(0, 2, size=(8, 4))
    y = np.cumsum(x, axis=1) % 2
    _poisoned(model, model.num_parameters - 3)
    for call in (lambda: model.generate(x), trainer.evaluate, lambda: model.autoregressive_accuracy(x, y),
                 lambda: probes.sharpness(model, x, y, repeats=2), lambda: probes.ln_blowup(model, x, y=y),
                 lambda: probes.hvp(model, x, y, np.ones(model.num_parameters))):
        with pytest.raises(FloatingPointError, match="non-finite"):
            call()


def test_finite_models_are_untouched(encoder, batch, tmp_path):
    encoder.save(tmp_path / "m.npz")
    assert np.isfinite(probes.sharpness(encoder, *batch, repeats=2).value)
