"""Where runs execute: in this process, in local worker processes, or on a Dask cluster.

Workers only compute (``runner.execute_safely``); the driver that called ``sweep.run``
receives each result and writes it to the store. Local pools use the ``forkserver`` start
method (``spawn`` where it is unavailable): never ``fork`` after OpenMP has started threads,
which can hang libgomp.

Per-run progress (``run_progress``: a handler the driver calls with each ``RunReporter``
message): the serial executor and a caller's ``ThreadPoolExecutor`` call it directly, local
processes send through a multiprocessing queue that a driver thread drains, Dask workers log
events on a topic the driver's client subscribes to. Other ``concurrent.futures`` executors
(e.g. a caller's process pool) cannot carry it: a warning says so and the runs go without bars.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import uuid
import warnings

from .progress import CallSink, DaskSink, QueueDrain
from .runner import execute_safely

#: the progress sink of a local pool's worker process (set by the pool's initializer)
_worker_sink = None


def _init_worker(queue):
    """A local pool's worker: its progress sink (a queue passes only at process start), and no
    process-shared tqdm lock. tqdm makes one (a named semaphore) for its first bar, and a worker
    stopped by Ctrl-C or SIGTERM never unlinks it, so the resource tracker warned of leaked
    semaphores at exit; workers draw no bars, so the thread lock suffices."""
    global _worker_sink
    _worker_sink = queue
    from tqdm.std import TqdmDefaultWriteLock

    TqdmDefaultWriteLock.mp_lock = None  # an existing one is unlinked as it is collected


def _execute_in_worker(config, n_threads):
    return execute_safely(config, n_threads, _worker_sink)


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: below this much work per step (d_model x batch x length) a run is too small to gain from a
#: second thread: OpenMP's barriers cost more than they save, badly so on a busy machine
SMALL_RUN_WORK = 1 << 21


def threads_for(config: dict, workers: int, n_threads=None) -> int:
    """Threads for one run: explicit ``n_threads``, else the cores left per concurrent run for
    runs large enough to use them, else 1."""
    if n_threads:
        return int(n_threads)
    work = config["d_model"] * config["batch_size"] * max(config["n"], *(config.get("train_lengths") or [0]))
    return max(1, usable_cpus() // max(workers, 1)) if work >= SMALL_RUN_WORK else 1


def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class Backend:
    """The seam every executor goes through: submit, iterate completions, cancel, close."""

    name = "backend"
    n_threads = 1
    workers = 1

    def submit(self, config: dict):
        raise NotImplementedError

    def as_completed(self, futures):
        raise NotImplementedError

    def result(self, future):
        return future.result()

    def cancel(self, futures):
        for f in futures:
            f.cancel()

    def release(self, future):
        """Forget a finished run whose result is stored (the executor need not keep it)."""

    def close(self, interrupted=False):
        pass

    def describe(self) -> str:
        return f"{self.name}: {self.workers} worker(s) x {self.n_threads} thread(s)"


class SerialBackend(Backend):
    """Runs each configuration in this process, one at a time, when its result is requested."""

    name = "serial"

    def __init__(self, n_threads=None, run_progress=None):
        self._n_threads = n_threads
        self.n_threads = n_threads or "1 or all"
        self._sink = CallSink(run_progress) if run_progress else None

    def submit(self, config):
        return config

    def as_completed(self, futures):
        return iter(futures)

    def result(self, future):
        return execute_safely(future, threads_for(future, 1, self._n_threads), self._sink)

    def cancel(self, futures):
        pass


class LocalBackend(Backend):
    """A ``ProcessPoolExecutor`` (forkserver) sized to the machine: min(cores, runs) workers;
    each run gets cores // workers threads if it is large enough to use them (``threads_for``),
    else 1 (so 1 whenever the pool is full)."""

    name = "processes"

    def __init__(self, n_runs, max_workers=None, n_threads=None, run_progress=None):
        cpus = usable_cpus()
        self.workers = max(1, min(max_workers or cpus, n_runs))
        self._n_threads = n_threads
        self.n_threads = n_threads or max(1, cpus // self.workers)
        ctx = _mp_context()
        self._drain = None
        queue = None
        if run_progress:
            queue = ctx.Queue()
            self._drain = QueueDrain(queue, run_progress)
        self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker,
                                           initargs=(queue,))

    def submit(self, config):
        return self.pool.submit(_execute_in_worker, config, threads_for(config, self.workers, self._n_threads))

    def as_completed(self, futures):
        return cf.as_completed(futures)

    def cancel(self, futures):
        pass  # close(interrupted=True) stops everything; cancelling first upsets 3.11's pool manager

    def close(self, interrupted=False):
        if interrupted:
            # stop the runs in flight (their results could not be stored any more): the pool
            # then marks every future broken and its manager thread exits
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    proc.terminate()
        self.pool.shutdown(wait=True)
        if self._drain is not None:
            self._drain.stop()


class FuturesBackend(Backend):
    """Any ``concurrent.futures.Executor`` the caller made (it stays open afterwards)."""

    name = "executor"

    def __init__(self, executor, n_threads=None, run_progress=None):
        self.executor = executor
        self.n_threads = n_threads or 1
        self.workers = getattr(executor, "_max_workers", 1)
        self._sink = None
        if run_progress and isinstance(executor, cf.ThreadPoolExecutor):
            self._sink = CallSink(run_progress)  # same process: call the handler directly
        elif run_progress:
            warnings.warn(f"run_progress needs the serial or local executor, a ThreadPoolExecutor or Dask; "
                          f"{type(executor).__name__} runs go without per-run bars", RuntimeWarning, stacklevel=4)

    def submit(self, config):
        return self.executor.submit(execute_safely, config, self.n_threads, self._sink)

    def as_completed(self, futures):
        return cf.as_completed(futures)


#: seconds to reach a Dask scheduler given by address: a running one answers in milliseconds, and
#: a wrong address should fail while the user still waits for it (Dask's default is 30 s)
CONNECT_TIMEOUT = 5


def _connect(distributed, address):
    try:
        return distributed.Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
    except OSError as err:  # refused, unresolvable, timed out
        raise ConnectionError(f"cannot reach the Dask scheduler at {address} (within {CONNECT_TIMEOUT} s): is it "
                              f"running, and is that its address? ({err})") from None


class DaskBackend(Backend):
    """A dask.distributed cluster: ``"tcp://host:port"`` (connect, and close the connection
    afterwards) or an existing ``distributed.Client`` (left open). Each run uses one thread
    unless ``n_threads`` says otherwise (Dask workers run one task per worker thread)."""

    name = "dask"

    def __init__(self, client_or_address, n_threads=None, run_progress=None):
        try:
            import distributed
        except ImportError as err:
            raise ImportError("running on a Dask cluster needs dask.distributed: "
                              "pip install 'sensiformer[sweep]'") from err
        self._distributed = distributed
        if isinstance(client_or_address, str):
            self.client = _connect(distributed, client_or_address)
            self._own = True
        else:
            self.client = client_or_address
            self._own = False
        self.n_threads = n_threads or 1
        try:
            self.workers = sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values())
        except Exception:  # noqa: BLE001 - only used for the description
            self.workers = 0
        self._topic = self._sink = None
        if run_progress:
            # the handler runs on the client's event-loop thread; events are (timestamp, message)
            self._topic = f"sensiformer-progress-{uuid.uuid4().hex}"
            self._sink = DaskSink(self._topic)
            self.client.subscribe_topic(self._topic, lambda event: run_progress(event[1]))

    def submit(self, config):
        from .config import as_config

        key = f"sensiformer-run-{as_config(config).key}"
        return self.client.submit(execute_safely, config, self.n_threads, self._sink, key=key, pure=False,
                                  retries=0)

    def as_completed(self, futures):
        return self._distributed.as_completed(futures, loop=self.client.loop)

    def cancel(self, futures):
        self.client.cancel(list(futures))

    def release(self, future):
        future.release()  # the scheduler forgets the result: a lost worker does not recompute it

    def close(self, interrupted=False):
        if self._topic is not None:
            self.client.unsubscribe_topic(self._topic)
        if self._own:
            self.client.close()

    def describe(self):
        return f"dask {self.client.scheduler.address}: {self.workers} worker thread(s) x {self.n_threads} thread(s)"


def make_backend(executor, n_runs, max_workers=None, n_threads=None, run_progress=None) -> Backend:
    """``executor``: None / "processes" (local pool), "serial", "tcp://host:port" or
    "dask" (a Dask scheduler; "dask" uses the address in dask's config), a
    ``distributed.Client``, or any ``concurrent.futures.Executor``. ``run_progress``: the
    driver's handler of per-run progress messages (see the module docstring), or None."""
    if executor is None or executor in ("processes", "local"):
        if n_runs <= 1 and max_workers in (None, 1):
            return SerialBackend(n_threads, run_progress)  # one run: no pool start-up, all cores for it
        return LocalBackend(n_runs, max_workers, n_threads, run_progress)
    if executor == "serial":
        return SerialBackend(n_threads, run_progress)
    if isinstance(executor, str):
        if executor == "dask":
            import dask

            address = dask.config.get("scheduler-address", None)
            if not address:
                raise ValueError("executor='dask' needs a scheduler address in dask's config "
                                 "(or pass executor='tcp://host:port')")
            return DaskBackend(address, n_threads, run_progress)
        if "://" in executor:
            return DaskBackend(executor, n_threads, run_progress)
        raise ValueError(f"unknown executor {executor!r}: use 'processes', 'serial', 'tcp://host:port' "
                         "or a distributed.Client / concurrent.futures.Executor")
    if type(executor).__name__ == "Client" and hasattr(executor, "scheduler_info"):
        return DaskBackend(executor, n_threads, run_progress)
    if isinstance(executor, cf.Executor):
        return FuturesBackend(executor, n_threads, run_progress)
    raise TypeError(f"unsupported executor {executor!r}")
