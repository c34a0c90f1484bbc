"""Bitwise determinism beyond training (tests/test_determinism.py): probes, analysis (exact and
Monte-Carlo) and checkpoints give the same bits with 1 or 2 threads -- at sizes where the engine
really splits the work (``model.last_threads == 2``) -- in fresh processes, and across
save -> load -> continue.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import analysis, targets

N_BITS, D_MODEL, BATCH = 12, 64, 256  # big enough that the engine splits the work over 2 threads


@pytest.fixture(scope="module")
def model():
    m = sf.Transformer(N_BITS, d_model=D_MODEL, dtype="float64", seed=1)
    rng = np.random.default_rng(7)
    m.flat[:] += rng.normal(scale=0.05, size=m.num_parameters)  # away from the symmetric init
    return m


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(BATCH, N_BITS), dtype=np.uint8)
    return x, targets.Parity(N_BITS)(x)


PROBES = {
    "sharpness": lambda m, x, y, nt: sf.probes.sharpness(m, x, y, repeats=3, seed=5, batch_size=128,
                                                         n_threads=nt).samples,
    "sharpness shared draws": lambda m, x, y, nt: sf.probes.sharpness(m, x, y, sigma=0.05, repeats=2, seed=9,
                                                                      batch_size=128, paper_compatible=True,
                                                                      n_threads=nt).samples,
    "ln_blowup official": lambda m, x, y, nt: sf.probes.ln_blowup(m, x, per_sample=True, n_threads=nt)["maxs"],
    "ln_blowup theory": lambda m, x, y, nt: sf.probes.ln_blowup(m, x, definition="theory", per_sample=True,
                                                                n_threads=nt)["means"],
    "attention_logit_scale": lambda m, x, y, nt: sf.probes.attention_logit_scale(m, x, n_threads=nt)["max"],
    "hvp": lambda m, x, y, nt: sf.probes.hvp(m, x, y, np.linspace(-1, 1, m.num_parameters), n_threads=nt),
    "hessian_trace": lambda m, x, y, nt: sf.probes.hessian_trace(m, x[:64], y[:64], samples=3, seed=2,
                                                                 n_threads=nt).samples,
    "estimate_sensitivity": lambda m, x, y, nt: analysis.estimate_sensitivity(m, N_BITS, samples=150, seed=3,
                                                                              n_threads=nt).samples,
    "model_sensitivity exact": lambda m, x, y, nt: analysis.model_sensitivity(m, 10, threshold=None,
                                                                              n_threads=nt).table,
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_probes_and_estimates_are_bitwise_identical_for_1_and_2_threads(model, data, probe):
    x, y = data
    before = model.flat.copy()
    one = np.asarray(PROBES[probe](model, x, y, 1))
    assert model.last_threads == 1
    two = np.asarray(PROBES[probe](model, x, y, 2))
    assert model.last_threads == 2, "the 2-thread call did not split the work"
    assert np.array_equal(one, two), f"{probe}: 1 and 2 threads differ"
    assert np.array_equal(np.asarray(PROBES[probe](model, x, y, 2)), two), f"{probe}: not reproducible"
    assert np.array_equal(model.flat, before), f"{probe} changed the parameters"


def test_exact_analysis_is_bitwise_identical_across_threads():
    rng = np.random.default_rng(1)
    real = rng.normal(size=2**18)
    boolean = rng.integers(0, 2, size=2**18).astype(np.float64)
    calls = {
        "fourier": lambda nt: analysis.fourier(real, n_threads=nt),
        "degree_spectrum": lambda nt: analysis.degree_spectrum(real, n_threads=nt),
        "influences": lambda nt: analysis.influences(real, n_threads=nt),
        "influences boolean": lambda nt: analysis.influences(boolean, n_threads=nt),
        "sensitivity": lambda nt: analysis.sensitivity(real, n_threads=nt),
        "sensitivity_profile": lambda nt: analysis.sensitivity_profile(boolean, n_threads=nt),
        "average_sensitivity fourier": lambda nt: np.array([analysis.average_sensitivity(real, method="fourier",
                                                                                         n_threads=nt)]),
        "fwht": lambda nt: analysis.fwht(real.copy(), n_threads=nt),
    }
    for name, call in calls.items():
        assert np.array_equal(call(1), call(2)), name


def _train(n_threads, steps, trainer=None):
    if trainer is None:
        model = sf.Transformer(N_BITS, d_model=D_MODEL, seed=1)
        trainer = sf.Trainer(model, targets.Parity(N_BITS), optimizer=sf.AdamW(lr=1e-3, weight_decay=0.1),
                             batch_size=BATCH, seed=4, n_threads=n_threads)
    trainer.n_threads = n_threads
    trainer.fit(steps, log_every=1, progress=False)
    return trainer


def _checkpoint_arrays(path):
    with np.load(path) as z:
        meta = json.loads(str(z["__meta__"]))
        arrays = {k: z[k] for k in z.files if not k.startswith("__")}
    for row in meta["history"]:
        row.pop("time", None)  # wall time is the one field that may differ
    return meta, arrays


def test_checkpoints_and_resume_are_bitwise_identical_across_threads(tmp_path):
    """1 thread and 2 threads write the same checkpoint; a checkpoint written with 2 threads and
    resumed with 1 (and vice versa) continues exactly like an uninterrupted run."""
    straight = _train(1, 4)
    first = _train(1, 2)
    first.save_checkpoint(tmp_path / "one.npz")
    second = _train(2, 2)
    assert second.model.last_threads == 2
    second.save_checkpoint(tmp_path / "two.npz")
    meta1, arrays1 = _checkpoint_arrays(tmp_path / "one.npz")
    meta2, arrays2 = _checkpoint_arrays(tmp_path / "two.npz")
    assert meta1 == meta2
    for key in arrays1:
        assert np.array_equal(arrays1[key], arrays2[key]), key

    for path, threads in (("two.npz", 1), ("one.npz", 2)):
        resumed = _train(threads, 0)
        resumed.load_checkpoint(tmp_path / path)
        _train(threads, 2, resumed)
        assert np.array_equal(resumed.model.flat, straight.model.flat), f"resume {path} with {threads} thread(s)"
        assert resumed.history["loss"].tolist() == straight.history["loss"].tolist()
        s1, s2 = resumed.optimizer.state_dict(), straight.optimizer.state_dict()
        assert np.array_equal(s1["exp_avg_sq"], s2["exp_avg_sq"]) and s1["step"] == s2["step"]


def test_model_file_round_trip_is_bitwise(tmp_path, model, data):
    x, _ = data
    model.save(tmp_path / "m.npz")
    loaded = sf.load(tmp_path / "m.npz")
    assert loaded.config == model.config and np.array_equal(loaded.flat, model.flat)
    assert np.array_equal(loaded.forward(x, n_threads=2), model.forward(x, n_threads=1))


PROCESS_CHILD = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    import sensiformer as sf
    from sensiformer import analysis, targets
    n_threads = int(sys.argv[1])
    model = sf.Transformer(12, d_model=64, seed=1)
    trainer = sf.Trainer(model, targets.Parity(12), optimizer=sf.AdamW(lr=1e-3, weight_decay=0.1),
                         batch_size=256, seed=4, n_threads=n_threads)
    history = trainer.fit(3, log_every=1, progress=False)
    train_threads = model.last_threads
    x, y = trainer.sample_batch(100)
    sharp = sf.probes.sharpness(model, x, y, repeats=2, seed=3, n_threads=n_threads).samples
    mc = analysis.estimate_sensitivity(model, 12, samples=64, seed=1, n_threads=n_threads).samples
    h = hashlib.sha256()
    for arr in (model.flat, trainer.optimizer.state_dict()["exp_avg_sq"], history["loss"].to_numpy(), sharp, mc):
        h.update(np.ascontiguousarray(arr).tobytes())
    print(json.dumps(dict(digest=h.hexdigest(), threads=train_threads)))
""")


def test_same_run_in_fresh_processes_gives_the_same_bits():
    """The same training, probe and estimate in separate interpreters (different hash seeds,
    1 or 2 threads) hash to the same digest."""
    reports = []
    for threads, hash_seed in ((2, "1"), (2, "2"), (1, "3")):
        proc = subprocess.run([sys.executable, "-c", PROCESS_CHILD, str(threads)], capture_output=True, text=True,
                              timeout=300, env=dict(os.environ, PYTHONHASHSEED=hash_seed))
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert [r["threads"] for r in reports] == [2, 2, 1]
    assert len({r["digest"] for r in reports}) == 1, reports
