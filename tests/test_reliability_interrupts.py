"""Ctrl-C during long probes returns control within a second with the model unchanged, and a
multiprocessing 'fork' pool started after multi-threaded (OpenMP) work neither hangs nor computes
anything different. Both run in child interpreters (SIGINT reset to its default, as in
tests/test_interrupt.py), so that a hang or a crash fails one test instead of the run."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PROBE_CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import sensiformer as sf
    probe, n_threads = sys.argv[1], int(sys.argv[2])
    model = sf.Transformer(16, d_model=64, n_layers=2, seed=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(512, 16))
    y = rng.integers(0, 2, size=512).astype(float)
    before, out = model.flat.copy(), model.forward(x[:8], n_threads=1)
    calls = {
        # each takes hours: the signal must stop it
        "sharpness": lambda: sf.probes.sharpness(model, x, y, repeats=1 << 20, batch_size=128, n_threads=n_threads),
        "hessian_density": lambda: sf.probes.hessian_density(model, x[:128], y[:128], probes=40, steps=200,
                                                              n_threads=n_threads),
        "worst_case_sharpness": lambda: sf.probes.worst_case_sharpness(model, x, y, rho=0.05, steps=10**6,
                                                                        n_threads=n_threads),
        "model_sensitivity": lambda: sf.analysis.model_sensitivity(model, 16, exact=False, samples=10**7,
                                                                    n_threads=n_threads),
    }
    print("started", flush=True)
    try:
        calls[probe]()
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    stopped = time.time()
    report = dict(interrupted=interrupted, stopped=stopped, unchanged=bool(np.array_equal(model.flat, before)),
                  same_forward=bool(np.array_equal(model.forward(x[:8], n_threads=1), out)))
    # the model is free again: a short probe works and gives the usual result
    est = sf.probes.sharpness(model, x[:128], y[:128], repeats=2, seed=4, n_threads=n_threads)
    report["probe_after"] = float(est.value)
    report["unchanged_after"] = bool(np.array_equal(model.flat, before))
    print(json.dumps(report), flush=True)
""")


def _interrupt(probe, n_threads, delay=1.0):
    proc = subprocess.Popen([sys.executable, "-c", PROBE_CHILD, probe, str(n_threads)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = err = ""
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the child did not start within 120 s"
        line = proc.stdout.readline()
        assert line.strip() == "started", line
        time.sleep(delay)  # well inside the probe by now
        assert proc.poll() is None, "the probe finished before the signal"
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        more_out, more_err = proc.communicate()
        out, err = out + (more_out or ""), err + (more_err or "")
        if sys.exc_info()[0] is not None:
            print(err[-3000:])  # the child's traceback, shown with the failure
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    return report, report["stopped"] - sent


@pytest.mark.parametrize("probe, n_threads", [("sharpness", 1), ("sharpness", 2), ("hessian_density", 1),
                                              ("worst_case_sharpness", 1), ("model_sensitivity", 1)])
def test_ctrl_c_during_a_long_probe_returns_quickly_and_changes_nothing(probe, n_threads):
    report, latency = _interrupt(probe, n_threads)
    assert report["interrupted"], "the probe did not raise KeyboardInterrupt"
    assert latency < 1.0, f"{probe} took {latency:.2f} s to return after SIGINT"
    assert report["unchanged"], f"{probe} left perturbed parameters behind"
    assert report["same_forward"] and report["unchanged_after"]


FORK_POOL_CHILD = textwrap.dedent("""
    import json, warnings
    import multiprocessing as mp
    import numpy as np
    import sensiformer as sf
    warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12 warns about fork with threads
    openmp = sf.show_config(print_out=False)["openmp"]
    model = sf.Transformer(12, d_model=64, seed=1)
    trainer = sf.Trainer(model, sf.targets.Parity(12), batch_size=256, n_threads=2)
    trainer.fit(2, progress=False)  # the OpenMP team is up
    x = np.random.default_rng(0).integers(0, 2, size=(256, 12))
    y = sf.targets.Parity(12)(x)
    ref_out = model.forward(x, n_threads=2)
    parent_threads = model.last_threads
    ref_sharp = sf.probes.sharpness(model, x, y, repeats=2, seed=1, n_threads=2).samples
    ref_table = sf.analysis.truth_table(model, 8, n_threads=2)

    def work(i):
        out = model.forward(x, n_threads=2)
        used = model.last_threads
        sharp = sf.probes.sharpness(model, x, y, repeats=2, seed=1, n_threads=2).samples
        table = sf.analysis.truth_table(model, 8, n_threads=2)
        child = sf.Trainer(model.copy(), sf.targets.Parity(12), batch_size=64, seed=i)
        child.fit(2, progress=False)
        return dict(same_out=out.tobytes() == ref_out.tobytes(), used=used, threads=sf.get_num_threads(),
                    same_sharp=bool(np.array_equal(sharp, ref_sharp)), same_table=bool(np.array_equal(table, ref_table)),
                    trained=bool(np.all(np.isfinite(child.model.flat))) and child.step_count == 2)

    ctx = mp.get_context("fork")
    pool = ctx.Pool(2)
    try:
        results, hung = pool.map_async(work, range(4)).get(timeout=90), False
        pool.close()
    except mp.TimeoutError:
        results, hung = None, True
        pool.terminate()
    pool.join()
    after = model.forward(x, n_threads=2)
    print(json.dumps(dict(openmp=openmp, hung=hung, results=results, parent_threads=parent_threads,
                          parent_after_threads=model.last_threads, parent_same=after.tobytes() == ref_out.tobytes())))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_pool_after_openmp_does_not_hang():
    proc = subprocess.run([sys.executable, "-c", FORK_POOL_CHILD], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["hung"], "a forked pool worker hung"
    results = report["results"]
    assert len(results) == 4
    for r in results:
        assert r["same_out"] and r["same_sharp"] and r["same_table"] and r["trained"], r
        assert r["used"] == 1 and r["threads"] == 1, "forked workers must fall back to one thread"
    if report["openmp"]:
        assert report["parent_threads"] == 2 and report["parent_after_threads"] == 2
    assert report["parent_same"]
