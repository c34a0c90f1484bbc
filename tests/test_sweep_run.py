"""Running sweeps for real: executors, resume after SIGKILL, failures, a Dask LocalCluster."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sensiformer import sweep
from sensiformer.sweep import FinalMeasurement, Predictions, RunConfig, Store


def tiny(seed=0, target="parity", n=4, steps=60, **kw):
    kw.setdefault("final", FinalMeasurement(batches=2))
    return RunConfig(target=target, n=n, seed=seed, d_model=8, batch_size=16, steps=steps, log_every=20,
                     eval_batches=2, lr=3e-3, **kw)


def comparable(df):
    cols = ["key", "eval_loss", "sharpness", "blowup_maxs_prod", "param_norm", "final_train_loss"]
    return df[cols].sort_values("key").reset_index(drop=True)


def test_serial_and_process_executors_give_identical_results(tmp_path):
    configs = [tiny(seed=s, target=t) for s in (0, 1) for t in ("parity", "first")]
    a = sweep.run_configs(configs, tmp_path / "a.db", executor="serial", progress=False)
    b = sweep.run_configs(configs, tmp_path / "b.db", executor="processes", max_workers=2, progress=False)
    assert a.executed == b.executed == 4 and not a.failed and not b.failed
    ra, rb = Store(tmp_path / "a.db").runs(), Store(tmp_path / "b.db").runs()
    assert comparable(ra).equals(comparable(rb)), "results do not depend on the executor"
    assert set(rb["n_threads"]) == {1}
    assert rb["version"].notna().all() and rb["cpu_path"].notna().all() and rb["build"].notna().all()
    hist = Store(tmp_path / "a.db").history()
    assert set(hist.groupby("key").size()) == {3}, "60 steps logged every 20"


def test_rerun_skips_finished_runs(tmp_path):
    configs = [tiny(seed=s) for s in range(3)]
    first = sweep.run_configs(configs[:2], tmp_path / "r.db", executor="serial", progress=False)
    again = sweep.run_configs(configs + configs[:1], tmp_path / "r.db", executor="serial", progress=False)
    assert (first.executed, again.executed, again.skipped, again.total) == (2, 1, 2, 3)
    assert len(Store(tmp_path / "r.db")) == 3


def test_failed_runs_are_recorded_and_retried(tmp_path):
    bad = tiny(n=6, n_positions=4)  # inputs longer than the model: raises inside the run
    with pytest.warns(sweep.SweepFailures):
        res = sweep.run_configs([tiny(), bad], tmp_path / "r.db", executor="serial", progress=False)
    assert res.executed == 1 and res.failed == [bad.key]
    store = Store(tmp_path / "r.db")
    assert len(store) == 1 and "n_positions" in store.failures()["error"].iloc[0]
    with pytest.warns(sweep.SweepFailures):
        res = sweep.run_configs([tiny(), bad], store, executor="serial", progress=False)
    assert res.skipped == 1 and res.failed == [bad.key], "a failure is not a result: the rerun tries again"


def test_scratchpad_runs_are_the_official_measurement(tmp_path):
    """A scratchpad run trains the Seq2SeqTransformer on the prefix parities and stores the
    measurement that a direct computation on the same batches gives; ``converged`` is the
    paper's filter (autoregressive accuracy > 0.999), not the MSE one."""
    import numpy as np

    import sensiformer as sf
    from sensiformer.sweep.runner import _FINAL_STREAM

    cfg = tiny(model="scratchpad", n=5, steps=200, final=FinalMeasurement(batches=2, sharpness_repeats=4))
    res = sweep.execute(cfg)
    m = res["metrics"]
    assert res["status"] == "ok" and m["eval_exact"] and m["eval_inputs"] == 32
    model = sf.Seq2SeqTransformer(5, d_model=8, seed=0)
    trainer = sf.Trainer(model, sf.targets.PrefixParity(5), optimizer=sf.AdamW(lr=3e-3, weight_decay=0.1),
                         batch_size=16, seed=0, n_threads=1)
    trainer.fit(200, log_every=20, progress=False)
    assert [r["loss"] for r in res["history"]] == list(trainer.history["loss"]), "the same training"
    pairs = [trainer.sample_batch(step=_FINAL_STREAM + k) for k in range(2)]
    x, y = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    assert y.shape == (32, 5) and np.array_equal(y, np.cumsum(x, axis=1) % 2), "labels: the prefix parities"
    sharp = sf.probes.sharpness(model, x, y, repeats=4, batch_size=16, paper_compatible=True)
    blow = sf.probes.ln_blowup(model, x, y=y)
    acc = model.autoregressive_accuracy(x, y)
    assert m["sharpness"] == sharp.value and m["sharpness_stderr"] == sharp.stderr
    assert m["blowup_official_encoder_maxs_prod"] == blow["official/encoder/maxs_prod"]
    assert m["blowup_official_decoder_maxs_prod"] == blow["official/decoder/maxs_prod"]
    assert m["blowup_encoder_maxs_prod"] == blow["encoder/maxs_prod"]
    assert m["autoregressive_accuracy"] == acc["token"] and m["sequence_accuracy"] == acc["sequence"]
    assert m["param_norm"] == sf.probes.param_norm(model)
    assert m["measure_loss"] == model.loss(x, y)
    assert m["eval_autoregressive_accuracy"] == trainer.evaluate()["autoregressive_accuracy"]
    assert m["converge_threshold"] == 0.999 and m["converged"] == (acc["token"] > 0.999)
    # the filter decides, whatever the MSE: an untrained model fails it
    untrained = sweep.execute(cfg.replace(steps=0))["metrics"]
    assert untrained["autoregressive_accuracy"] < 0.9 and not untrained["converged"]


def test_the_final_measurement_of_a_subset_trained_run_samples_uniform_inputs():
    """Issue 17 point 3: the official final measurement samples uniform inputs even when the run trained on
    a restricted subset; sensiformer's drew its measurement batches from the subset."""
    import numpy as np

    import sensiformer as sf
    from sensiformer.sweep import runner

    n = 8
    subset = sf.restricted_subset(n, 4, seed=0)
    trainer = sf.Trainer(sf.Transformer(n, d_model=8), sf.targets.Parity(n), batch_size=64, train_subset=subset)
    x, y = runner._measurement_data(trainer, 2)
    index = (x.astype(np.int64) << np.arange(n - 1, -1, -1)).sum(axis=1)  # x_1 most significant
    assert len(set(index) - set(subset.tolist())) > 32, "the measurement drew from the training subset"
    assert np.array_equal(y, sf.targets.Parity(n)(x))
    sub_x, _ = trainer.sample_batch(step=0)
    assert set((sub_x.astype(np.int64) << np.arange(n - 1, -1, -1)).sum(axis=1)) <= set(subset.tolist())
    with pytest.raises(ValueError, match="needs a target"):
        sf.Trainer(sf.Transformer(n, d_model=8), data=(x, y)).sample_batch(uniform=True)


def test_scratchpad_configs_refuse_encoder_only_options():
    with pytest.raises(ValueError, match="prefix labels"):
        tiny(model="scratchpad", target="mean")
    with pytest.raises(ValueError, match="train_subset"):
        tiny(model="scratchpad", train_subset=8)
    with pytest.raises(ValueError, match="init, save_predictions"):
        tiny(model="scratchpad", init="gaussian", predictions=Predictions(save=True))


@pytest.mark.parametrize("model", ["encoder", "scratchpad"])
@pytest.mark.parametrize("positional", sweep.config.POSITIONALS)
def test_the_runner_builds_the_requested_positional_encoding_and_norm(model, positional):
    from sensiformer.sweep import runner

    built = runner._model(tiny(model=model, positional=positional, norm_type="rms", rope_base=500.0))
    assert built.config["positional"] == positional and built.config["norm_type"] == "rms"
    assert built.config["rope_base"] == 500.0
    assert runner._model(tiny(model=model)).config["positional"] == "concat", "the paper's by default"


def test_a_run_without_positions_computes_a_function_of_the_multiset():
    """positional='none' reaches the run's model: after training, moving the tokens before the read-out position
    around leaves its output unchanged, which the paper's learned positions do not."""
    import numpy as np

    from sensiformer.sweep import runner

    x = np.random.default_rng(0).integers(0, 2, (64, 6)).astype(np.uint8)
    moved = np.concatenate([x[:, :-1][:, ::-1], x[:, -1:]], axis=1)  # reversed, the read-out position kept
    outputs = {}
    for positional in ("none", "concat"):
        model, _, trainer, _ = runner._build(tiny(n=6, positional=positional), 1)
        trainer.fit(20, progress=False)
        outputs[positional] = model.forward(x), model.forward(moved)
    assert np.allclose(*outputs["none"], atol=1e-5)
    assert not np.allclose(*outputs["concat"], atol=1e-3)


def test_sigkill_midway_then_resume(tmp_path):
    """Kill a sweep with SIGKILL while it runs: the store holds only whole runs, and a rerun
    executes exactly the missing ones."""
    db = tmp_path / "r.db"
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from sensiformer import sweep
        from sensiformer.sweep import RunConfig
        configs = [RunConfig(target="parity", n=5, seed=s, d_model=8, batch_size=32, steps=400, log_every=20,
                             final=sweep.FinalMeasurement(batches=2), eval_batches=2, lr=3e-3) for s in range(8)]
        sweep.run_configs(configs, {str(db)!r}, executor="serial", progress=False, sweep="killed")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TQDM_DISABLE": "1"})
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and len(Store(db)) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    store = Store(db)
    done = store.keys()
    assert 2 <= len(done) < 8
    hist = store.history()
    assert set(hist.groupby("key").size()) == {20} and set(hist["key"]) == done, "no partial runs or histories"
    assert len(store.pending("killed")) == 8 - len(done)
    configs = [RunConfig(target="parity", n=5, seed=s, d_model=8, batch_size=32, steps=400, log_every=20,
                         final=sweep.FinalMeasurement(batches=2), eval_batches=2, lr=3e-3) for s in range(8)]
    res = sweep.run_configs(configs, store, executor="serial", progress=False, sweep="killed")
    assert res.skipped == len(done) and res.executed == 8 - len(done)
    assert len(store) == 8 and store.pending("killed") == []


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    configs = [tiny(seed=s, target=t) for s in (0, 1) for t in ("parity", "majority")]
    reference = sweep.run_configs(configs[:1], tmp_path / "ref.db", executor="serial", progress=False)
    assert reference.executed == 1
    with dask_default_ports_busy(), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     worker_dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            res = sweep.run_configs(configs[:2], tmp_path / "d.db", executor=client, progress=False)
            assert res.executed == 2
            pids = set(client.run(os.getpid).values())
        assert os.getpid() not in pids
        # by address, as `sensiformer sweep --executor tcp://...` does; finished runs are skipped
        res = sweep.run_configs(configs, tmp_path / "d.db", executor=cluster.scheduler_address, progress=False)
        assert (res.executed, res.skipped) == (2, 2)
    store = Store(tmp_path / "d.db")
    assert len(store) == 4
    runs = store.runs()
    ref = Store(tmp_path / "ref.db").runs()
    assert comparable(runs[runs["key"] == ref["key"][0]]).equals(comparable(ref)), "same bits on Dask workers"


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, "KeyboardInterrupt"), (signal.SIGTERM, "Terminated")])
def test_ctrl_c_or_sigterm_stops_a_local_pool_and_its_workers(tmp_path, signum, raised):
    """SIGTERM (SLURM's cancel) is handled as Ctrl-C by a sweep run from the main thread: it
    raises ``sweep.Terminated``, a KeyboardInterrupt, after stopping the workers, and puts
    Python's default handling back."""
    psutil = pytest.importorskip("psutil")
    db = tmp_path / "r.db"
    script = textwrap.dedent(f"""
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
        sys.path[:0] = {sys.path!r}
        from sensiformer import sweep
        from sensiformer.sweep import RunConfig
        if __name__ == "__main__":
            configs = [RunConfig(target="parity", n=5, seed=s, d_model=8, batch_size=32, steps=100_000,
                                 final=sweep.FinalMeasurement(batches=2), eval_batches=2) for s in range(4)]
            try:
                sweep.run_configs(configs, {str(db)!r}, executor="processes", max_workers=2, progress=False)
            except KeyboardInterrupt as err:
                print("interrupted", type(err).__name__, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
                      flush=True)
    """)
    path = tmp_path / "driver.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [p for p in parent.children(recursive=True) if p.cpu_times().user > 0.2]
            time.sleep(0.2)
        assert len(workers) >= 2, "the pool's workers are busy"
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"interrupted {raised} True" in out
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "no worker keeps running after Ctrl-C"
    assert len(Store(db)) == 0


def test_cosine_lr_schedule_decays_to_zero_over_the_run():
    cosine = sweep.execute(tiny(steps=60, lr_schedule="cosine"))["history"]
    lrs = [r["lr"] for r in cosine]
    assert len(lrs) == 3 and lrs == sorted(lrs, reverse=True)
    assert 0.5 * 3e-3 < lrs[0] < 3e-3 and lrs[-1] < 1e-3 * 3e-3
    assert [r["lr"] for r in sweep.execute(tiny(steps=60))["history"]] == pytest.approx([3e-3] * 3)


@contextlib.contextmanager
def dask_default_ports_busy():
    """Hold Dask's default dashboard port, as another user's notebook or cluster would: a
    LocalCluster must not depend on it being free."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8787))
            s.listen()
        except OSError:
            pass  # already busy: the same condition
        yield


def _memory_transitions(scheduler, keys) -> dict:
    """How many times the scheduler computed each run (its task reached memory)."""
    names = {f"sensiformer-run-{k}": k for k in keys}
    counts = dict.fromkeys(keys, 0)
    for entry in scheduler.transition_log:
        key, finish = entry[0], entry[2]
        if key in names and finish == "memory":
            counts[names[key]] += 1
    return counts


def test_dask_worker_loss_recomputes_no_stored_run(tmp_path):
    """A Dask worker killed mid-sweep: runs already stored are not computed again (the sweep
    released their results as soon as they were stored), the sweep completes, and every run's
    provenance names the worker host and process that computed it."""
    distributed = pytest.importorskip("distributed")
    configs = [tiny(seed=s, steps=1500) for s in range(8)]
    db = tmp_path / "d.db"
    outcome = {}

    def drive(client):
        try:
            outcome["result"] = sweep.run_configs(configs, db, executor=client, progress=False)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = err

    with dask_default_ports_busy(), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        driver = threading.Thread(target=drive, args=(client,))
        driver.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.is_alive() and not (db.exists() and len(Store(db)) >= 2):
            time.sleep(0.05)
        runs = Store(db).runs()
        assert len(runs) < len(configs), "the sweep finished before a worker could be killed"
        stored = set(runs["key"])
        os.kill(int(runs["pid"].iloc[0]), signal.SIGKILL)  # a worker that computed a stored run
        driver.join(180)
        assert not driver.is_alive() and "error" not in outcome, outcome.get("error")
        computed = _memory_transitions(cluster.scheduler, {c.key for c in configs})
        worker_pids |= set(client.run(os.getpid).values())  # the restarted worker too
    assert outcome["result"].executed == len(configs) and not outcome["result"].failed
    assert {k: computed[k] for k in stored} == dict.fromkeys(stored, 1), "a stored run was computed again"
    runs = Store(db).runs()
    assert len(runs) == len(configs)
    assert set(runs["host"]) == {socket.gethostname()}
    assert set(runs["pid"]) <= worker_pids and os.getpid() not in worker_pids
