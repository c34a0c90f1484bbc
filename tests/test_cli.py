"""The command line: exit codes and messages, --version/--help/--dry-run, SIGTERM on a sweep."""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from sensiformer import __version__
from sensiformer.cli import _experiment, build_parser, main
from sensiformer.sweep import FinalMeasurement, RunConfig, Store

CI_SWEEP = ["sweep", "scaling", "--preset", "ci", "--executor", "serial", "--no-progress"]


def tiny(**kw):
    return RunConfig(**{**dict(n=4, d_model=8, batch_size=16, steps=20, final=FinalMeasurement(batches=1),
                                eval_batches=1), **kw})


@pytest.mark.parametrize("option, message", [
    ("lr=nan", "lr must be finite and >= 0, got nan"),
    ("lr=-1", "lr must be finite and >= 0, got -1.0"),
    ("d_model=7", "d_model must be even"),
    ("n_heads=3", "d_model (16) must be divisible by n_heads (3)"),
    ("dtype=float16", "dtype must be one of ('float32', 'float64'), got 'float16'"),
    ("steps=abc", "steps must be an integer, got 'abc'"),
    ("lengths=0", "n must be >= 1, got 0"),
])
def test_bad_settings_are_refused_up_front_and_leave_no_store(tmp_path, capsys, option, message):
    db = tmp_path / "r.db"
    assert main([*CI_SWEEP, "--store", str(db), "--set", option]) == 2
    err = capsys.readouterr().err
    assert message in err and f"--set {option}" in err
    assert not db.exists(), "no run started, no store created"


@pytest.mark.parametrize("option", [["--threads", "-3"], ["--workers", "0"], ["--threads", "x"]])
def test_bad_counts_name_their_option(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        main([*CI_SWEEP, "--store", str(tmp_path / "r.db"), *option])
    assert exit_info.value.code == 2 and f"argument {option[0]}" in capsys.readouterr().err


def test_one_value_of_a_grid_axis_is_a_one_element_grid():
    args = build_parser().parse_args(["sweep", "scaling", "--preset", "ci", "--set", "lengths=64",
                                      "--set", "targets=first"])
    assert [(c.n, c.target) for c in _experiment(args).configs()] == [(64, "first")]


def test_a_sweep_whose_runs_fail_exits_1_and_lists_the_failures(tmp_path, capsys):
    path = tmp_path / "configs.jsonl"  # inputs longer than the model: every run raises on its worker
    path.write_text("\n".join(json.dumps(tiny(n=6, n_positions=4, seed=s).to_dict()) for s in range(2)))
    db = tmp_path / "r.db"
    assert main(["sweep", str(path), "--store", str(db), "--executor", "serial", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 runs failed" in err and "2 x ValueError" in err and "n_positions" in err
    assert len(Store(db).failures()) == 2, "the store keeps the failures for `sensiformer show`"
    # one good run and one bad one: still 1, and only the bad one is listed
    path.write_text("\n".join(json.dumps(c.to_dict()) for c in (tiny(), tiny(n=6, n_positions=4))))
    assert main(["sweep", str(path), "--store", str(db), "--executor", "serial", "--no-progress"]) == 1
    assert "1 of 2 runs failed" in capsys.readouterr().err and len(Store(db)) == 1


@pytest.mark.parametrize("kind", ["directory", "text file", "other database"])
def test_a_store_that_is_not_a_results_store_is_refused(tmp_path, capsys, kind):
    path = tmp_path / "store"
    if kind == "directory":
        path.mkdir()
    elif kind == "text file":
        path.write_text("not a database\n")
    else:
        with sqlite3.connect(path) as conn:  # a SQLite file whose `runs` is someone else's table
            conn.execute("CREATE TABLE meta (name TEXT)")
    before = path.read_bytes() if path.is_file() else None
    assert main([*CI_SWEEP, "--store", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and ("is a directory" in err or "results store" in err)
    assert "Traceback" not in err
    assert (path.read_bytes() if path.is_file() else None) == before, "the file is left as it was"


def test_an_unreachable_scheduler_fails_fast_naming_it_and_leaves_no_store(tmp_path, capsys):
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    db = tmp_path / "r.db"
    started = time.monotonic()
    assert main(["sweep", "scaling", "--preset", "ci", "--store", str(db), "--executor", address]) == 2
    assert time.monotonic() - started < 15
    assert f"cannot reach the Dask scheduler at {address}" in capsys.readouterr().err
    assert not db.exists(), "the store this command created and left empty is removed"


def test_version_help_and_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"sensiformer {__version__}"
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    out = capsys.readouterr().out
    assert "(default: quick)" in out and "(default: results.db)" in out
    assert "{scaling,tradeoff,dynamics,generalization,scratchpad,length_generalization" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "scalling"])
    assert exit_info.value.code == 2 and "invalid choice: 'scalling'" in capsys.readouterr().err


def test_dry_run_lists_the_runs_and_their_cost_and_runs_nothing(tmp_path, capsys):
    db = tmp_path / "r.db"
    assert main(["reproduce", "scaling", "--preset", "ci", "--store", str(db), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 runs, 0 already stored" in out and "of CPU time" in out
    assert out.count("False") == 12, "one row per run, none stored"
    assert not db.exists()
    # after a partial sweep it counts what is stored
    assert main([*CI_SWEEP, "--store", str(db), "--set", "lengths=3"]) == 0
    capsys.readouterr()
    assert main(["sweep", "scaling", "--preset", "ci", "--store", str(db), "--dry-run"]) == 0
    assert "12 runs, 4 already stored; the 8 to run" in capsys.readouterr().out


def test_dry_run_estimate_is_the_order_of_the_measured_cost(tmp_path):
    """The calibrated estimate of the ci grid is within a factor of 4 of what the runs used
    (CPU time, so independent of the machine's load)."""
    from sensiformer import experiments, sweep
    from sensiformer.sweep import cost

    exp = experiments.scaling(preset="ci", steps=800, targets=("parity", "first"))
    estimate = cost.cpu_seconds(exp.configs()).sum()
    store = sweep.run(exp, tmp_path / "r.db", executor="serial", n_threads=1, progress=False)
    measured = store.runs(sweep=exp.sweep)["cpu_seconds"].sum()
    assert measured / 4 < estimate < measured * 4, (estimate, measured)


def _descendants(psutil, pid):
    return psutil.Process(pid).children(recursive=True)


def test_sigterm_stops_a_cli_sweep_and_its_workers_and_a_rerun_resumes(tmp_path):
    """What SLURM does on scancel or at the time limit: SIGTERM to the driver. The local
    workers are stopped (no process left within 5 s), the finished runs stay stored, the exit
    status is 143, and the same command resumes, running only the missing runs."""
    psutil = pytest.importorskip("psutil")
    db = tmp_path / "r.db"
    command = [sys.executable, "-m", "sensiformer", "sweep", "scaling", "--preset", "ci", "--executor", "processes",
               "--workers", "2", "--store", str(db), "--set", "steps=2500", "--set", "targets=parity,first",
               "--no-progress"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    children = []
    try:
        deadline = time.monotonic() + 120
        busy = []
        while time.monotonic() < deadline and proc.poll() is None:
            busy = [p for p in _descendants(psutil, proc.pid) if p.cpu_times().user > 0.3]
            if len(busy) >= 2 and db.exists() and len(Store(db)) >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep ended before it could be stopped"
        children = _descendants(psutil, proc.pid)  # the pool's workers, the forkserver, the resource tracker
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        out, err = proc.communicate(timeout=5)  # its output is a few lines: the pipes cannot fill
        _, alive = psutil.wait_procs(children, timeout=max(0.0, deadline - time.monotonic()))
        assert not alive, f"processes left 5 s after SIGTERM: {alive}"
    finally:
        for p in [proc, *children]:  # whatever a failure left behind
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                p.kill()
    assert proc.returncode == 143, err
    store = Store(db)
    stored = {k: store.result(k)["finished"] for k in store.keys()}
    assert 1 <= len(stored) < 6
    assert f"{len(stored)} finished run(s) are stored in {db}" in err and "run the same command again" in err
    assert "leaked semaphore" not in err and "Traceback" not in err, err
    assert set(store.history()["key"]) == set(stored), "whole runs only"

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    store = Store(db)
    assert len(store) == 6
    assert {k: store.result(k)["finished"] for k in stored} == stored, "stored runs were skipped, not run again"
