"""Ctrl-C during training, and fork() after multi-threaded work.

Both run in child interpreters: SIGINT must reach a process that is inside the C training
loop, and a fork after OpenMP has started its thread pool is exactly what could deadlock.
"""

import json
import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import sensiformer as sf
from sensiformer import targets



LOG_EVERY = 10

# A model whose fit(100000) takes far longer than the test (~0.01-0.1 s per step), while a
# single step stays short, so the engine reaches its between-steps stop check quickly.
TRAIN_CHILD = textwrap.dedent(f"""
    import json, sys, time
    import numpy as np
    import sensiformer as sf
    model = sf.Transformer(16, d_model=64, n_heads=2, n_layers=2)
    trainer = sf.Trainer(model, sf.targets.Parity(16), batch_size=64, n_threads=int(sys.argv[2]))

    def announce(tr, said=[]):
        # "started" once the C loop has run a whole chunk, so that the signal lands in training
        if not said:
            said.append(True)
            print("started", flush=True)

    try:
        trainer.fit(100000, log_every={LOG_EVERY}, callbacks=[sf.Callback(announce, every={LOG_EVERY})],
                    progress=False)
        print(json.dumps(dict(finished=True)), flush=True)
    except KeyboardInterrupt:
        h = trainer.history
        print(json.dumps(dict(
            finished=False, step_count=trainer.step_count, status=trainer.status,
            finite=bool(np.all(np.isfinite(model.flat))), history_len=len(h),
            last_step=int(h["step"].iloc[-1]) if len(h) else -1,
            optimizer_steps=trainer.optimizer.step_count,
            losses_finite=bool(np.all(np.isfinite(h["loss"]))) if len(h) else True,
            mode=sys.argv[1])), flush=True)
        if sys.argv[1] == "continue":
            trainer.fit(3, log_every=1, progress=False)  # training resumes where it stopped
            print(json.dumps(dict(after_status=trainer.status, after_steps=trainer.step_count,
                                  after_last=int(trainer.history["step"].iloc[-1]))), flush=True)
""")


def _run_and_interrupt(mode="", delay=2.0, n_threads=1):
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, mode, str(n_threads)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the child did not start training within 120 s"
        first = proc.stdout.readline()
        assert first.strip() == "started", (first, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(delay)
        assert proc.poll() is None, "the child stopped before the signal"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, elapsed, lines, err


def _check_interrupted(report):
    assert report["finished"] is False, report
    assert report["status"] == "interrupted", report
    assert report["finite"] is True
    steps = report["step_count"]
    assert steps > 0
    assert report["optimizer_steps"] == steps
    # every finished step is in the history: a row per LOG_EVERY steps plus the partial window
    assert report["last_step"] == steps
    assert report["history_len"] == math.ceil(steps / LOG_EVERY)
    assert report["losses_finite"]


def test_ctrl_c_stops_training_quickly_and_cleanly():
    # one thread: the stop check runs between steps, so the latency is at most one step, and a
    # two-thread step on an oversubscribed machine can take longer than the whole budget
    rc, elapsed, lines, err = _run_and_interrupt()
    assert rc == 0, err[-3000:]
    assert lines, err[-3000:]
    _check_interrupted(lines[0])
    assert elapsed < 1.5, f"the child took {elapsed:.2f} s to stop after SIGINT"


def test_training_continues_after_ctrl_c():
    rc, _, lines, err = _run_and_interrupt("continue", delay=1.5, n_threads=2)  # threaded training
    assert rc == 0, err[-3000:]
    assert len(lines) == 2, (lines, err[-3000:])
    report, after = lines
    _check_interrupted(report)
    assert after["after_status"] == "ok"
    assert after["after_steps"] == report["step_count"] + 3
    assert after["after_last"] == after["after_steps"]


def test_ctrl_c_during_a_callback_keeps_status_and_history():
    """Python raises KeyboardInterrupt wherever SIGINT lands; during a (slow) callback that is
    Python code in fit's loop. Simulated deterministically by a callback that raises it."""
    model = sf.Transformer(6, d_model=16)
    trainer = sf.Trainer(model, targets.Parity(6), batch_size=8)

    def slow_probe(tr):
        if tr.step_count == 14:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.fit(100, log_every=10, callbacks=[sf.Callback(slow_probe, every=7)], progress=False)
    assert trainer.step_count == 14
    assert trainer.status == "interrupted"
    assert trainer.history["step"].iloc[-1] == 14


FORK_CHILD = textwrap.dedent("""
    import json, sys, warnings
    import multiprocessing as mp
    import numpy as np
    import sensiformer as sf
    warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12 warns about fork with threads
    openmp = sf.show_config(print_out=False)["openmp"]
    model = sf.Transformer(16, d_model=64)
    trainer = sf.Trainer(model, sf.targets.Parity(16), batch_size=64, n_threads=2)
    trainer.fit(5, progress=False)  # the OpenMP pool is now running
    x = np.random.default_rng(0).integers(0, 2, size=(512, 16))
    ref = model.forward(x, n_threads=2)
    parent_threads = model.last_threads

    def work(conn):
        out = model.forward(x, n_threads=2)
        used = model.last_threads
        threads = sf.get_num_threads()
        trainer.fit(3, progress=False)  # the C training loop works in the child too
        conn.send(dict(out=out.tolist(), used=used, threads=threads, steps=trainer.step_count,
                       finite=bool(np.all(np.isfinite(model.flat)))))
        conn.close()

    ctx = mp.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    p = ctx.Process(target=work, args=(writer,))
    p.start()
    writer.close()
    got = reader.poll(60)
    result = reader.recv() if got else None
    p.join(30)
    hung = p.is_alive()
    if hung:
        p.kill()
        p.join()
    after = model.forward(x, n_threads=2)  # the parent keeps its threads
    print(json.dumps(dict(openmp=openmp, parent_threads=parent_threads, result=result, hung=hung,
                          exitcode=p.exitcode, same=result is not None and result["out"] == ref.tolist(),
                          parent_after_threads=model.last_threads, parent_same=bool(np.array_equal(after, ref)),
                          parent_steps=trainer.step_count)), flush=True)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_can_run_forward_and_training():
    proc = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["hung"], "the forked child hung"
    assert report["exitcode"] == 0
    result = report["result"]
    assert result is not None, "the forked child sent nothing"
    assert report["same"], "the forked child computed different outputs"
    assert result["finite"] and result["steps"] == 8
    assert result["used"] == 1 and result["threads"] == 1  # forked children run single-threaded
    if report["openmp"]:
        assert report["parent_threads"] == 2 and report["parent_after_threads"] == 2
    assert report["parent_same"] and report["parent_steps"] == 5
