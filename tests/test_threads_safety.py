"""Python threads: different models may be trained and probed concurrently (the engine releases
the GIL) with exactly the sequential results; one model used from two threads at once is refused
with a clear RuntimeError instead of being corrupted. docs/architecture.md ("Contracts") lists
what is not thread-safe."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import _native, analysis, targets

BUSY = r"being used by another call"


def _job(i, barrier=None):
    """Train and probe model i; a digest of every result."""
    if barrier is not None:
        barrier.wait()
    model = sf.Transformer(8, d_model=16, n_heads=2, n_layers=2, dtype=("float32", "float64")[i % 2], seed=i)
    trainer = sf.Trainer(model, targets.Parity(8), optimizer=sf.AdamW(lr=3e-3), batch_size=32, seed=i,
                         n_threads=1 + i % 2)
    history = trainer.fit(15, log_every=5, progress=False)
    x, y = trainer.sample_batch(999)
    results = [model.flat, history["loss"].to_numpy(), trainer.optimizer.state_dict()["exp_avg_sq"],
               sf.probes.sharpness(model, x, y, repeats=3, seed=i).samples,
               np.array([sf.probes.ln_blowup(model, x)["maxs_prod"]]),
               sf.probes.attention_logit_scale(model, x)["max"],
               sf.probes.hvp(model, x, y, np.ones(model.num_parameters)),
               analysis.model_sensitivity(model, 8).influences,
               analysis.estimate_sensitivity(model, 8, samples=50, seed=i).samples,
               analysis.fourier(analysis.truth_table(model, 8)),
               np.array([trainer.evaluate()["loss"]])]
    h = hashlib.sha256()
    for r in results:
        h.update(np.ascontiguousarray(r).tobytes())
    return h.hexdigest()


def test_threads_on_different_models_give_the_sequential_results():
    jobs = 6
    sequential = [_job(i) for i in range(jobs)]
    assert len(set(sequential)) == jobs  # the jobs really differ
    for _ in range(2):  # twice: more interleavings
        barrier = threading.Barrier(jobs)
        with ThreadPoolExecutor(jobs) as pool:
            concurrent = list(pool.map(lambda i: _job(i, barrier), range(jobs)))
        assert concurrent == sequential


def test_engine_errors_stay_with_their_thread():
    """The engine's error message buffer is per thread: concurrent failing calls each get their own."""
    model_a = sf.Transformer(4, d_model=8, n_heads=2, n_layers=1)
    model_b = sf.Transformer(4, d_model=8, n_heads=2, n_layers=1)
    bad_tokens = np.full((64, 4), 5, np.uint8)  # refused by the C boundary itself
    too_long = np.zeros((64, 6), np.uint8)
    mixed = []

    def hammer(engine, x, expected):
        for _ in range(300):
            try:
                _native.forward(model=engine, x=x, n_threads=1)
            except ValueError as err:
                if expected not in str(err):
                    mixed.append(str(err))

    threads = [threading.Thread(target=hammer, args=(model_a._engine, bad_tokens, "tokens 0 or 1")),
               threading.Thread(target=hammer, args=(model_b._engine, too_long, "n_positions"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mixed, mixed[:3]


@pytest.fixture
def busy_model():
    """A model and a probe that keeps it busy in another thread for about a second."""
    model = sf.Transformer(16, d_model=64, n_layers=2, seed=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(256, 16))
    y = targets.Parity(16)(x)
    return model, x, y


def _run_while_busy(model, x, y, attempt, seconds=1.0):
    """Run a long sharpness probe in a thread (retrying if ``attempt`` got the model first) and
    call ``attempt`` from this thread until the probe ends; return (outcomes, probe estimate)."""
    done = threading.Event()
    result = {}

    def probe():
        deadline = time.monotonic() + 60
        while True:
            try:
                result["estimate"] = sf.probes.sharpness(model, x, y, repeats=int(seconds / 0.02), seed=3,
                                                         n_threads=1)
                break
            except RuntimeError as err:  # this thread lost the race for the model: retry
                assert "another call" in str(err) and time.monotonic() < deadline
        done.set()

    thread = threading.Thread(target=probe)
    thread.start()
    outcomes = []
    while not done.is_set():
        try:
            outcomes.append(("ok", attempt()))
        except RuntimeError as err:
            outcomes.append(("busy", str(err)))
        time.sleep(0.002)
    thread.join()
    return outcomes, result["estimate"]


def test_the_same_model_from_two_threads_is_refused_not_corrupted(busy_model):
    model, x, y = busy_model
    before = model.flat.copy()
    reference = model.forward(x[:4], n_threads=1)
    expected = sf.probes.sharpness(model, x, y, repeats=50, seed=3, n_threads=1)
    outcomes, estimate = _run_while_busy(model, x, y, lambda: model.forward(x[:4], n_threads=1))
    busy = [o for kind, o in outcomes if kind == "busy"]
    assert busy, "no call overlapped the probe"
    assert all(BUSY in msg and "one thread at a time" in msg for msg in busy), busy[:2]
    # calls that got through saw the real parameters, never the probe's perturbed ones
    assert all(np.array_equal(o, reference) for kind, o in outcomes if kind == "ok")
    assert np.array_equal(model.flat, before), "the model was left perturbed"
    assert np.array_equal(estimate.samples, expected.samples), "the concurrent calls disturbed the probe"


def test_reads_of_the_parameters_during_sharpness_see_them_unperturbed(busy_model):
    model, x, y = busy_model
    before = model.flat.copy()
    outcomes, _ = _run_while_busy(model, x, y, lambda: model.flat.copy())
    assert len(outcomes) > 5, "too few reads overlapped the probe"
    assert all(np.array_equal(o, before) for _, o in outcomes), "a read saw perturbed parameters"


@pytest.mark.parametrize("call", ["loss_and_grad", "optimizer step", "fit", "ln_blowup", "hvp", "reinitialize"])
def test_every_engine_entry_refuses_a_busy_model(busy_model, call):
    model, x, y = busy_model
    before = model.flat.copy()
    optimizer = sf.SGD(lr=1e-3).bind(model)
    trainer = sf.Trainer(model, targets.Parity(16), optimizer=sf.SGD(lr=1e-3), batch_size=8)
    attempts = {
        "loss_and_grad": lambda: model.loss_and_grad(x[:8], y[:8], n_threads=1),
        "optimizer step": lambda: optimizer.step(n_threads=1),
        "fit": lambda: trainer.fit(1, progress=False),
        "ln_blowup": lambda: sf.probes.ln_blowup(model, x[:8], n_threads=1),
        "hvp": lambda: sf.probes.hvp(model, x[:8], y[:8], np.ones(model.num_parameters), n_threads=1),
        "reinitialize": lambda: model.reinitialize(1),
    }
    outcomes, _ = _run_while_busy(model, x, y, attempts[call], seconds=0.5)
    busy = [o for kind, o in outcomes if kind == "busy"]
    assert busy and all(BUSY in msg for msg in busy), outcomes[:3]
    if call in ("loss_and_grad", "ln_blowup", "hvp"):  # read-only calls: the parameters are intact
        assert np.array_equal(model.flat, before)
    if call == "fit":  # a refused fit counts nothing
        assert trainer.step_count == trainer.optimizer.step_count


def test_landscape_probe_in_another_thread_never_shows_perturbed_parameters():
    model = sf.Transformer(8, d_model=16, n_layers=1, seed=1)
    x = np.random.default_rng(0).integers(0, 2, size=(64, 8))
    y = targets.Parity(8)(x)
    reference = model.forward(x[:4], n_threads=1)
    done, seen = threading.Event(), threading.Event()

    def probe():
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not seen.is_set():
                try:
                    sf.probes.landscape_1d(model, x, y, alphas=np.linspace(-1, 1, 50), n_threads=1)
                except RuntimeError:
                    pass  # lost the race for the model: try again
        finally:
            done.set()

    thread = threading.Thread(target=probe)
    thread.start()
    wrong = 0
    while not done.is_set() and not wrong:
        try:
            wrong += not np.array_equal(model.forward(x[:4], n_threads=1), reference)
        except RuntimeError:
            pass
        time.sleep(0.0005)
    seen.set()
    done.wait()
    thread.join()
    assert wrong == 0, "a concurrent forward saw the probe's perturbed parameters"
