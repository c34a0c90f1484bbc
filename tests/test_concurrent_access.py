"""Python-side reads and writes of a model while another thread trains it (issue 16, point 9):
refused or consistent, never a file mixing two steps; checkpoints with disagreeing counters are
refused."""

import pickle
import threading

import numpy as np
import pytest

import sensiformer as sf


class _Stop(Exception):
    pass


def _trainer(seed=0):
    model = sf.Transformer(n_positions=6, d_model=16, n_heads=2, n_layers=1, seed=seed)
    return sf.Trainer(model, sf.targets.Parity(6), batch_size=32, seed=seed)


def _fit_in_background(trainer):
    """Start fit in a thread (stretches of 200 steps, the model busy in C most of the time); the
    returned ``stop`` ends it at the next stretch boundary."""
    stop, started = threading.Event(), threading.Event()

    def check(tr):
        started.set()
        if stop.is_set():
            raise _Stop

    def run():
        try:
            trainer.fit(10**7, log_every=200, progress=False, callbacks=[sf.Callback(check, every=200)])
        except _Stop:
            pass

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(60)
    return stop, thread


def test_python_side_access_during_fit_is_refused_or_consistent(tmp_path):
    trainer = _trainer()
    model = trainer.model
    stop, thread = _fit_in_background(trainer)
    refused = {}
    try:
        for i in range(40):
            for name, call in (("save_checkpoint", lambda: trainer.save_checkpoint(tmp_path / "ck.npz")),
                               ("load_checkpoint", lambda: trainer.load_checkpoint(tmp_path / "none.npz")),
                               ("save", lambda: model.save(tmp_path / f"m{i}.npz")),
                               ("flat", lambda: setattr(model, "flat", model.flat.copy())),
                               ("load_state_dict", lambda: model.load_state_dict(model.state_dict())),
                               ("astype", lambda: model.astype("float64")),
                               ("optimizer", lambda: trainer.optimizer.state_dict()),
                               ("param_norm", lambda: sf.probes.param_norm(model)),
                               ("pickle", lambda: pickle.dumps(model))):
                try:
                    call()
                except RuntimeError as err:
                    assert "refused" in str(err)
                    refused[name] = refused.get(name, 0) + 1
    finally:
        stop.set()
        thread.join()
    assert refused["save_checkpoint"] == refused["load_checkpoint"] == 40  # always, from another thread
    assert refused["save"] > 0 and refused["flat"] > 0 and refused["param_norm"] > 0  # while a C stretch runs
    assert not (tmp_path / "ck.npz").exists()
    for path in tmp_path.glob("m*.npz"):  # whatever was saved is one whole model
        assert sf.load(path).num_parameters == model.num_parameters


def test_fit_waits_for_a_python_side_hold_instead_of_failing():
    """A save or state dict in another thread holds the model for a moment; the training stretch
    that starts meanwhile waits for it (it used to fail the whole fit)."""
    trainer = _trainer()
    thread = threading.Thread(target=lambda: trainer.fit(50, log_every=10, progress=False))
    with trainer.model._exclusive("test hold"):
        thread.start()
        thread.join(0.3)
        assert thread.is_alive() and trainer.step_count == 0  # waiting for the hold, not failed
    thread.join(60)
    assert not thread.is_alive() and trainer.step_count == 50 and trainer.status != "failed"


def test_a_checkpoint_callback_still_saves_during_fit(tmp_path):
    trainer = _trainer()
    trainer.fit(20, log_every=10, progress=False, callbacks=[sf.Checkpoint(tmp_path / "ck.npz", every=10)])
    resumed = _trainer()
    resumed.load_checkpoint(tmp_path / "ck.npz")
    assert resumed.step_count == resumed.optimizer.step_count == 20


def test_steps_outside_fit_are_accounted_for(tmp_path):
    path = tmp_path / "ck.npz"
    trainer = _trainer()
    trainer.fit(5, progress=False)
    trainer.step(*trainer.sample_batch(100))  # a manual step: the data stream stays at 5
    trainer.save_checkpoint(path)
    resumed = _trainer()
    resumed.load_checkpoint(path)
    assert (resumed.step_count, resumed.optimizer.step_count) == (5, 6)
    trainer.fit(5, progress=False)
    resumed.fit(5, progress=False)
    assert np.array_equal(trainer.model.flat, resumed.model.flat)
    trainer.optimizer.step()  # the optimizer stepped behind the trainer's back
    with pytest.raises(RuntimeError, match="optimizer has taken 12 steps but the trainer accounts for 11"):
        trainer.save_checkpoint(path)


def test_one_fit_at_a_time_per_trainer():
    trainer = _trainer()
    stop, thread = _fit_in_background(trainer)
    try:
        with pytest.raises(RuntimeError, match="already inside fit"):
            trainer.fit(5, progress=False)
        with pytest.raises(RuntimeError, match="pickling the trainer refused"):
            pickle.dumps(trainer)
    finally:
        stop.set()
        thread.join()
    assert trainer.step_count == trainer.optimizer.step_count  # the refused calls changed nothing
    pickle.dumps(trainer)  # fine once fit has returned
