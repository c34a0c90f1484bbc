"""Models and trainers pickle, deep-copy and copy (issue 16, point 5), so they can go to a process
pool, joblib or Dask; ``copy.copy`` gives an independent model; a trainer prints usefully;
``probes.hvp`` takes the gradient dict of ``loss_and_grad``."""

import concurrent.futures
import copy
import multiprocessing
import operator
import pickle

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import probes


def _encoder(dtype="float32"):
    return sf.Transformer(n_positions=6, d_model=16, n_heads=2, n_layers=2, norm="pre", final_norm=True,
                          activation="gelu", dtype=dtype, seed=3)


def _seq2seq():
    return sf.Seq2SeqTransformer(n_positions=4, d_model=8, n_heads=2, n_layers=1, n_decoder_layers=2, seed=3)


def _inputs(n=6, rows=16):
    return np.random.default_rng(0).integers(0, 2, size=(rows, n))


def _outputs(model, x):
    if isinstance(model, sf.Seq2SeqTransformer):
        return model.forward(x, model.teacher_forcing(np.cumsum(x, axis=1) % 2))
    return model.forward(x)


ROUND_TRIPS = {"pickle": lambda obj: pickle.loads(pickle.dumps(obj)), "deepcopy": copy.deepcopy,
               "copy": copy.copy}


@pytest.mark.parametrize("make", [_encoder, lambda: _encoder("float64"), _seq2seq], ids=["f32", "f64", "seq2seq"])
@pytest.mark.parametrize("how", list(ROUND_TRIPS))
def test_model_round_trips_are_equal_and_independent(make, how):
    model = make()
    model.flat[:] = np.random.default_rng(1).normal(scale=0.3, size=model.num_parameters)
    other = ROUND_TRIPS[how](model)
    assert type(other) is type(model) and other.config == model.config
    assert np.array_equal(other.flat, model.flat) and other.flat.dtype == model.flat.dtype
    x = _inputs(model.n_positions)
    assert np.array_equal(_outputs(other, x), _outputs(model, x))
    other.flat[0] += 1.0  # its own buffer: the original is untouched
    assert other.flat[0] != model.flat[0]
    assert not np.shares_memory(other.flat, model.flat)


def _trained(model, target):
    trainer = sf.Trainer(model, target, optimizer=sf.AdamW(lr=3e-3, weight_decay=0.1), batch_size=32, seed=7)
    trainer.fit(30, log_every=10, progress=False)
    return trainer


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("kind", ["encoder", "seq2seq"])
def test_trainer_round_trip_resumes_bit_identically(how, kind):
    model, target = (_encoder(), sf.targets.Parity(6)) if kind == "encoder" else (_seq2seq(), sf.targets.PrefixParity(4))
    trainer = _trained(model, target)
    other = ROUND_TRIPS[how](trainer)
    assert other.model is not trainer.model and other.optimizer._model is other.model
    assert (other.step_count, other.optimizer.step_count, other.status) == (30, 30, "ok")
    assert other.history.drop(columns="time").equals(trainer.history.drop(columns="time"))
    state, other_state = trainer.optimizer.state_dict(), other.optimizer.state_dict()
    assert all(np.array_equal(state[k], other_state[k]) for k in ("exp_avg", "exp_avg_sq"))
    trainer.fit(20, log_every=10, progress=False)
    other.fit(20, log_every=10, progress=False)
    assert np.array_equal(trainer.model.flat, other.model.flat)
    assert trainer.history["loss"].tolist() == other.history["loss"].tolist()


def test_a_standalone_optimizer_round_trips():
    trainer = _trained(_encoder(), sf.targets.Parity(6))
    other = pickle.loads(pickle.dumps(trainer.optimizer))
    assert other.step_count == 30 and other.hyper == trainer.optimizer.hyper
    assert pickle.loads(pickle.dumps(sf.SGD(lr=0.1, momentum=0.9))).hyper["momentum"] == 0.9  # unbound


def test_models_and_trainers_through_a_process_pool():
    model = _encoder()
    trainer = _trained(_encoder(), sf.targets.Parity(6))
    x = _inputs()
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        outputs = pool.submit(operator.methodcaller("forward", x), model)
        evaluation = pool.submit(operator.methodcaller("evaluate"), trainer)
        returned = pool.submit(copy.deepcopy, trainer)  # there and back: two pickles
        assert np.array_equal(outputs.result(timeout=120), model.forward(x))
        assert evaluation.result(timeout=120) == trainer.evaluate()
        back = returned.result(timeout=120)
    back.fit(10, progress=False)
    trainer.fit(10, progress=False)
    assert np.array_equal(back.model.flat, trainer.model.flat)


def test_trainer_repr_says_what_it_trains():
    trainer = sf.Trainer(_encoder(), sf.targets.Parity(6), batch_size=32, seed=5)
    text = repr(trainer)
    assert text.startswith("Trainer(Transformer(") and "Parity(n=6)" in text and "AdamW(" in text
    assert "batch_size=32" in text and "seed=5" in text and "step=0" in text and "status='ready'" in text
    trainer.fit(10, log_every=10, progress=False)
    assert "step=10" in repr(trainer) and "last_loss=" in repr(trainer)
    data = sf.Trainer(_encoder(), data=(_inputs(), np.zeros(16)), batch_size=8)
    assert "data of 16 rows" in repr(data)


def test_hvp_takes_the_gradient_dict():
    model = _encoder("float64")
    x = _inputs()
    y = (x.sum(axis=1) % 2).astype(float)
    _, grads = model.loss_and_grad(x, y)
    hg = probes.hvp(model, x, y, grads)
    assert list(hg) == list(model.parameters())
    assert all(hg[k].shape == model.parameters()[k].shape for k in hg)
    flat = probes.hvp(model, x, y, model.flat_grad.copy())
    np.testing.assert_array_equal(np.concatenate([v.reshape(-1) for v in hg.values()]), flat)
    with pytest.raises(ValueError, match="missing"):
        probes.hvp(model, x, y, {k: v for k, v in grads.items() if k != "linear_head.bias"})
    with pytest.raises(ValueError, match="linear_head.weight"):
        probes.hvp(model, x, y, dict(grads, **{"linear_head.weight": np.zeros(3)}))
