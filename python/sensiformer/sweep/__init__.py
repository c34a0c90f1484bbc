"""Resumable sweeps: run many configurations, keep every finished result in a store.

>>> from sensiformer import experiments, sweep
>>> exp = experiments.scaling(preset="quick")                     # doctest: +SKIP
>>> store = sweep.run(exp, store="results.db")                    # doctest: +SKIP
>>> store.runs(sweep=exp.sweep)                                   # doctest: +SKIP

Each run is keyed by ``RunConfig.key`` (a hash of the fields that change its results; see
``sensiformer.sweep.config``). ``run`` skips keys the store already holds, so rerunning a
sweep after a crash, a kill or Ctrl-C executes only the runs that had not finished. Results
are written by this (driver) process as they arrive, one transaction per run. Called from the
main thread, ``run`` treats SIGTERM (SLURM's cancel and time limit) as Ctrl-C: it stops the
runs in flight and their worker processes, keeps what is stored, and raises ``Terminated``
(a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import hashlib
import warnings
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from .._interrupt import Terminated, terminate_as_interrupt
from .config import CONVERGED_MSE, HASH_VERSION, RunConfig, as_config, hex_to_table, table_to_hex
from .executors import make_backend, usable_cpus
from .plan import Stage, StagedSweep
from .probe_config import (Dynamics, FinalMeasurement, LengthEvaluation, ModelSensitivity, Predictions, ProbeSettings,
                           TrainSharpness)
from .progress import RunBars, env_disabled
from .runner import check_buildable, execute, provenance
from .store import Store

__all__ = ["CONVERGED_MSE", "HASH_VERSION", "Dynamics", "FinalMeasurement", "LengthEvaluation", "ModelSensitivity",
           "Predictions", "ProbeSettings", "RunConfig", "Stage", "StagedSweep", "Store", "SweepResult", "Terminated",
           "TrainSharpness", "as_config", "check_buildable", "execute", "hex_to_table", "provenance", "run",
           "run_configs", "table_to_hex", "usable_cpus"]


class SweepFailures(RuntimeWarning):
    """Some runs of a sweep raised; they are in ``store.failures()`` and a rerun retries them."""


@dataclass
class SweepResult:
    """What one call of ``run_configs`` did."""

    sweep: str
    total: int
    skipped: int = 0
    executed: int = 0
    failed: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    interrupted: bool = False


def _as_store(store) -> Store:
    if isinstance(store, Store):
        return store
    if store is None:
        raise ValueError("give a store: a Store or the path of a SQLite file, e.g. store='results.db'")
    return Store(store)


def default_sweep_name(configs) -> str:
    digest = hashlib.sha256("".join(c.key for c in configs).encode()).hexdigest()[:10]
    return f"configs-{digest}"


def _result(backend, fut) -> dict:
    try:
        return backend.result(fut)
    except BrokenProcessPool as err:
        raise RuntimeError(
            "a worker process died (every finished run is stored; rerun to resume). If this is a script, "
            "put the sweep under `if __name__ == '__main__':` (worker processes are started with "
            "forkserver/spawn and import the main module), or use executor='serial'") from err


def run_configs(configs, store, *, executor=None, sweep=None, max_workers=None, n_threads=None, progress=True,
                tags=None, run_progress=False) -> SweepResult:
    """Run a list of configurations (RunConfig or dicts), skipping those already stored.

    Parameters
    ----------
    configs : list of RunConfig or dict
    store : Store or path
    executor : None, "processes", "serial", "tcp://host:port", distributed.Client or Executor
        Default: local processes sized to the machine (``usable_cpus()`` runs at once, one
        thread each; a single pending run gets every core).
    sweep : str, optional
        Name under which the store records the membership of these runs.
    max_workers, n_threads : int, optional
        Override the local pool's size and the threads each run uses.
    progress : bool
        One tqdm bar for the sweep (``TQDM_DISABLE=1`` silences it).
    run_progress : bool or callable
        Also one bar per run in flight, showing its training steps and loss (closed when the
        run's result is stored); a callable instead receives every progress message (a dict:
        key, label, step, total, loss, phase), in the driver, from any thread. Works with the
        serial and local executors, a ``ThreadPoolExecutor`` and Dask (workers send events
        through the scheduler, at most 4 per second per run); other executors warn and go
        without. Training is split into up to
        100 more C stretches, which does not change results.

    Returns
    -------
    SweepResult
    """
    from tqdm.auto import tqdm

    configs = [as_config(c) for c in configs]
    check_buildable(configs)  # before the store is touched: a bad setting fails here, not on every worker
    store = _as_store(store)
    sweep = sweep or default_sweep_name(configs)
    store.add_members(sweep, [(i, c.key, {**c.tags, **(tags or {})}) for i, c in enumerate(configs)])
    done = store.keys()
    todo, seen = [], set()
    for c in configs:
        if c.key not in done and c.key not in seen:
            seen.add(c.key)
            todo.append(c)
    unique = len({c.key for c in configs})
    result = SweepResult(sweep=sweep, total=unique, skipped=unique - len(todo), keys=[c.key for c in configs])
    if not todo:
        return result
    run_bars = RunBars(enabled=run_progress is True)
    handler = run_bars if run_progress is True else (run_progress or None)
    backend = make_backend(executor, len(todo), max_workers, n_threads, handler)
    bar = tqdm(total=unique, initial=result.skipped, desc=sweep, unit="run", disable=not progress or env_disabled(),
               leave=True)
    in_flight = {}  # id -> future of the unfinished runs only: a stored result is dropped at once (see below)
    interrupted = False
    try:
        with terminate_as_interrupt():
            for c in todo:
                fut = backend.submit(c.to_dict())
                in_flight[id(fut)] = fut
            for fut in backend.as_completed(list(in_flight.values())):
                del in_flight[id(fut)]
                res = _result(backend, fut)
                run_bars.finish(res["key"])
                if "failed" in res:
                    store.add_failure(res["key"], res["config"], res["failed"], sweep)
                    result.failed.append(res["key"])
                else:
                    store.write(res)
                    result.executed += 1
                # a Dask cluster would otherwise keep the result in a worker's memory until the
                # sweep ends, and recompute it when that worker is lost
                backend.release(fut)
                bar.update(1)
                bar.set_postfix(failed=len(result.failed), refresh=False)
    except BaseException:
        interrupted = True
        result.interrupted = True
        backend.cancel(list(in_flight.values()))
        raise
    finally:
        bar.close()
        backend.close(interrupted=interrupted)
        run_bars.close()
    if result.failed:
        warnings.warn(f"{len(result.failed)} run(s) of {sweep} failed; see store.failures() "
                      f"(a rerun retries them)", SweepFailures, stacklevel=2)
    return result


def run(experiment, store="results.db", *, executor=None, max_workers=None, n_threads=None, progress=True,
        stages=None, run_progress=False) -> Store:
    """Run an experiment (``sensiformer.experiments.*``, or any ``StagedSweep``) or a list of configurations.

    Finished runs are skipped, so a rerun resumes. Returns the ``Store``; read results with
    ``store.runs(sweep=experiment.sweep)`` or ``experiment.results(store)``.

    ``stages`` limits a multi-stage experiment (e.g. generalization: "fit" then "refit") to the
    named stages. ``run_progress=True`` adds a bar per run in flight (see ``run_configs``).
    """
    store = _as_store(store)
    if isinstance(experiment, StagedSweep):
        with terminate_as_interrupt():  # also between stages
            _run_stages(experiment, store, stages, executor=executor, max_workers=max_workers,
                         n_threads=n_threads, progress=progress, run_progress=run_progress)
        return store
    run_configs(experiment, store, executor=executor, max_workers=max_workers, n_threads=n_threads,
                progress=progress, run_progress=run_progress)
    return store


def _run_stages(experiment, store, stages, **options):
    for stage in experiment.stages:
        if stages is not None and stage.name not in stages:
            continue
        run_configs(stage.build(store), store, sweep=experiment.stage_sweep(stage), **options)
