"""Numerical faults: a diverging run stops with status "diverged" and a catchable
``sensiformer.DivergenceError``, keeps the last finite parameters (those from before the failing
step) and optimizer state, and its history ends at the last finite step."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import targets


@pytest.fixture(autouse=True)
def _single_thread():
    sf.set_num_threads(1)
    yield
    sf.set_num_threads(None)


class Snapshots(sf.Callback):
    """Records (step, parameters, optimizer moments) after every step."""

    def __init__(self, trainer):
        super().__init__(every=1)
        self.states = [(0, trainer.model.flat.copy(), trainer.optimizer.state_dict())]

    def __call__(self, trainer):
        self.states.append((trainer.step_count, trainer.model.flat.copy(), trainer.optimizer.state_dict()))


OPTIMIZERS = {
    "AdamW(lr=1e6)": lambda: sf.AdamW(lr=1e6),
    "SGD(lr=1e50)": lambda: sf.SGD(lr=1e50),
    "Adam(lr=1e200)": lambda: sf.Adam(lr=1e200),
    "SGD(lr=1e3, momentum=0.9)": lambda: sf.SGD(lr=1e3, momentum=0.9),
}


def _check_diverged(trainer, snapshots, err):
    model = trainer.model
    assert isinstance(err, FloatingPointError)  # DivergenceError is one
    assert trainer.status == "diverged"
    assert re.search(r"finite|nan|inf", str(err)), str(err)
    assert np.all(np.isfinite(model.flat)), "non-finite parameters were kept"
    step, flat, opt_state = snapshots.states[-1]
    assert trainer.step_count == step, "the step count includes the failing step"
    assert np.array_equal(model.flat, flat), "the parameters are not those from before the failing step"
    state = trainer.optimizer.state_dict()
    assert state["step"] == opt_state["step"] == step
    assert np.array_equal(state["exp_avg"], opt_state["exp_avg"])
    assert np.array_equal(state["exp_avg_sq"], opt_state["exp_avg_sq"])
    history = trainer.history
    if step:
        assert history["step"].tolist() == list(range(1, step + 1))
        assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(history["grad_norm"]))
    else:
        assert history.empty


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_divergence_stops_training_and_keeps_the_last_finite_state(dtype, optimizer):
    model = sf.Transformer(6, d_model=8, n_heads=2, n_layers=1, dtype=dtype, seed=2)
    trainer = sf.Trainer(model, targets.Parity(6), optimizer=OPTIMIZERS[optimizer](), batch_size=16, seed=1)
    snapshots = Snapshots(trainer)
    with pytest.raises(sf.DivergenceError) as info:
        trainer.fit(200, log_every=1, callbacks=[snapshots], progress=False)
    _check_diverged(trainer, snapshots, info.value)
    # the failure is deterministic: fitting again fails at the same step and changes nothing
    step, flat = trainer.step_count, model.flat.copy()
    with pytest.raises(sf.DivergenceError):
        trainer.fit(5, log_every=1, progress=False)
    assert trainer.step_count == step and np.array_equal(model.flat, flat) and trainer.status == "diverged"


def test_divergence_is_catchable_as_floating_point_error_and_keeps_history():
    model = sf.Transformer(6, d_model=8, n_heads=2, n_layers=1, seed=2)
    trainer = sf.Trainer(model, targets.Parity(6), optimizer=sf.SGD(lr=1e3, momentum=0.9), batch_size=16)
    try:
        trainer.fit(500, log_every=3, progress=False)
    except FloatingPointError as err:
        caught = err
    else:
        pytest.fail("training with lr=1e3 did not diverge")
    assert isinstance(caught, sf.DivergenceError)
    history = trainer.history
    assert trainer.status == "diverged" and len(history) >= 1
    assert history["step"].iloc[-1] == trainer.step_count  # the partial window is logged too
    assert np.all(np.isfinite(history["loss"]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_non_finite_parameters_from_outside_stop_training_at_once(dtype):
    """A NaN written into the parameters (through a view, bypassing the setter's check) is caught
    on the first step, before any update."""
    model = sf.Transformer(6, d_model=8, n_heads=2, n_layers=1, dtype=dtype)
    trainer = sf.Trainer(model, targets.Parity(6), batch_size=16)
    model.parameters()["linear_head.bias"][0] = np.nan
    before = model.flat.copy()
    with pytest.raises(sf.DivergenceError, match=r"nan|finite"):
        trainer.fit(3, progress=False)
    assert trainer.status == "diverged" and trainer.step_count == 0
    assert np.array_equal(model.flat, before, equal_nan=True)
    assert trainer.optimizer.step_count == 0


def test_overflowing_loss_on_huge_labels_diverges_cleanly():
    model = sf.Transformer(4, d_model=8, n_heads=2, n_layers=1, dtype="float64")
    x = np.random.default_rng(0).integers(0, 2, size=(8, 4))
    trainer = sf.Trainer(model, data=(x, np.full(8, 1e200)), batch_size=8)
    before = model.flat.copy()
    with pytest.raises(sf.DivergenceError):
        trainer.fit(2, progress=False)
    assert trainer.step_count == 0 and np.array_equal(model.flat, before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_single_python_side_step_refuses_a_non_finite_update(dtype):
    model = sf.Transformer(6, d_model=8, n_heads=2, n_layers=1, dtype=dtype)
    lr = 1e50 if dtype == "float32" else 1e308  # updates beyond the dtype's range
    trainer = sf.Trainer(model, targets.Parity(6), optimizer=sf.SGD(lr=lr), batch_size=16)
    x, y = trainer.sample_batch(0)
    before = model.flat.copy()
    with pytest.raises(FloatingPointError, match=r"finite"):
        trainer.step(x, y)
    assert np.array_equal(model.flat, before) and trainer.optimizer.step_count == 0


def test_loss_of_a_diverged_model_is_reported_not_hidden():
    """Evaluation of a model whose outputs overflow reports inf/NaN loss rather than raising or
    pretending: accuracy stays in [0, 1]."""
    model = sf.Transformer(4, d_model=8, n_heads=2, n_layers=1, dtype="float32", norm="none")
    model.flat[:] = 1e18
    trainer = sf.Trainer(model, targets.Parity(4), batch_size=8)
    with np.errstate(all="ignore"):
        result = trainer.evaluate()
    assert not math.isfinite(result["loss"]) or result["loss"] > 1e10
    assert 0.0 <= result["accuracy"] <= 1.0
