"""Per-run progress: every executor carries the runs' training progress back to the driver, the
bars follow it, and reporting changes no result."""

import threading

import pytest

from sensiformer import sweep
from sensiformer.sweep import FinalMeasurement, RunConfig, Store
from sensiformer.sweep.progress import REPORTS_PER_RUN, RunBars, RunReporter


def tiny(seed=0, steps=400, **kw):
    return RunConfig(target="parity", n=4, seed=seed, d_model=8, batch_size=16, steps=steps, log_every=100,
                     final=FinalMeasurement(batches=2), eval_batches=2, lr=3e-3, **kw)


class Recorder:
    """A progress handler that keeps every message (called from any thread)."""

    def __init__(self):
        self.messages = []
        self._lock = threading.Lock()

    def __call__(self, message):
        with self._lock:
            self.messages.append(dict(message))

    def of(self, key):
        return [m for m in self.messages if m["key"] == key]


def check_messages(messages, cfg):
    """From step 0 to the last step, then the probing phase; never more than the callback's cadence."""
    assert messages, f"no progress from {cfg.key}"
    steps = [m["step"] for m in messages]
    assert steps[0] == 0 and steps == sorted(steps)
    train = [m for m in messages if m["phase"] == "train"]
    assert train[-1]["step"] == cfg.steps and messages[-1]["phase"] == "probing"
    assert len(messages) <= REPORTS_PER_RUN + 3
    assert {m["total"] for m in messages} == {cfg.steps} and {m["label"] for m in messages} == {
        f"parity n=4 seed={cfg.seed}"}
    assert train[-1]["loss"] is not None


def comparable(df):
    cols = ["key", "eval_loss", "sharpness", "blowup_maxs_prod", "param_norm", "final_train_loss"]
    return df[cols].sort_values("key").reset_index(drop=True)


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_local_executors_report_every_run_and_results_do_not_change(tmp_path, executor):
    configs = [tiny(seed=s) for s in (0, 1)]
    plain = sweep.run_configs(configs, tmp_path / "a.db", executor="serial", progress=False)
    rec = Recorder()
    res = sweep.run_configs(configs, tmp_path / "b.db", executor=executor, max_workers=2, progress=False,
                            run_progress=rec)
    assert plain.executed == res.executed == 2
    for cfg in configs:
        check_messages(rec.of(cfg.key), cfg)
    assert comparable(Store(tmp_path / "a.db").runs()).equals(comparable(Store(tmp_path / "b.db").runs()))
    assert Store(tmp_path / "a.db").history().drop(columns="time").equals(
        Store(tmp_path / "b.db").history().drop(columns="time")), "the same history rows"


def test_bars_follow_the_runs_and_close_with_their_results(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "0")
    bars = RunBars()
    base = dict(label="parity n=4 seed=0", total=200, loss=None, phase="train")
    bars(dict(base, key="a", step=0))
    bars(dict(base, key="b", step=50, loss=0.25))
    assert sorted(bars.open_keys) == ["a", "b"]
    bars(dict(base, key="a", step=120, loss=0.125))
    assert bars._bars["a"].n == 120 and bars._bars["a"].postfix == "loss=0.125"
    bars.finish("a")
    bars(dict(base, key="a", step=200))  # late message after its result: no new bar
    assert bars.open_keys == ["b"]
    bars.close()
    assert bars.open_keys == []
    quiet = RunBars(enabled=False)
    quiet(dict(base, key="c", step=1))
    assert quiet.open_keys == []
    # end to end: the bars are drawn and all closed when the sweep ends
    sweep.run_configs([tiny(steps=100)], tmp_path / "r.db", executor="serial", progress=False, run_progress=True)
    err = capsys.readouterr().err
    assert "parity n=4 seed=0" in err and "100/100" in err
    monkeypatch.setenv("TQDM_DISABLE", "1")  # silences both kinds of bars
    sweep.run_configs([tiny(steps=100, seed=1)], tmp_path / "r.db", executor="serial", run_progress=True)
    assert capsys.readouterr().err == ""


def test_reporter_is_throttled_and_splits_training_into_at_most_100_stretches():
    from sensiformer.sweep.progress import CallSink

    rec = Recorder()
    cfg = tiny(steps=1000)
    reporter = RunReporter(CallSink(rec), cfg)
    assert reporter.every == 10
    reporter.send(0, force=True)
    for step in (10, 20, 30):
        reporter.send(step)  # within MIN_INTERVAL of the last message: dropped
    reporter.send(1000, 0.1, force=True)
    assert [m["step"] for m in rec.messages] == [0, 1000]
    assert RunReporter(CallSink(rec), tiny(steps=7)).every == 1


def test_other_executors_warn_and_run_without_bars(tmp_path):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    rec = Recorder()
    with ThreadPoolExecutor(2) as pool:
        sweep.run_configs([tiny(seed=3)], tmp_path / "t.db", executor=pool, progress=False, run_progress=rec)
    check_messages(rec.of(tiny(seed=3).key), tiny(seed=3))
    with ProcessPoolExecutor(1) as pool, pytest.warns(RuntimeWarning, match="without per-run bars"):
        res = sweep.run_configs([tiny(seed=4, steps=20)], tmp_path / "p.db", executor=pool, progress=False,
                                run_progress=True)
    assert res.executed == 1


@pytest.mark.slow
def test_dask_workers_report_through_the_scheduler(tmp_path):
    distributed = pytest.importorskip("distributed")
    import time

    configs = [tiny(seed=s) for s in (0, 1)]
    rec = Recorder()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  worker_dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        res = sweep.run_configs(configs, tmp_path / "d.db", executor=client, progress=False, run_progress=rec)
        assert res.executed == 2
        deadline = time.monotonic() + 10  # events travel worker -> scheduler -> client asynchronously
        while time.monotonic() < deadline and not all(
                any(m["phase"] == "probing" for m in rec.of(c.key)) for c in configs):
            time.sleep(0.05)
    for cfg in configs:
        check_messages(rec.of(cfg.key), cfg)
