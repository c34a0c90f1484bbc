"""Per-run progress bars: workers report training steps, the driver draws one bar per run in flight.

A run reports through a *sink* (anything with ``put(message)``): ``RunReporter`` is the trainer
callback that sends ``{"key", "label", "step", "total", "loss", "phase"}`` messages. Each
executor carries the messages back to the driver in its own way (``executors.py``): in-process
for the serial executor, a multiprocessing queue for local processes, Dask's event topics for a
cluster. On the driver ``RunBars`` turns them into tqdm bars, from whichever thread delivers
them, and closes a run's bar when its result is stored.
"""

from __future__ import annotations

import threading
import time

from .._config import tqdm_env_disabled
from ..trainer import Callback

#: reports per run at most (the callback splits training into this many C stretches at most)
REPORTS_PER_RUN = 100
#: and at most one message per this many seconds per run (a Dask scheduler relays every message)
MIN_INTERVAL = 0.25


env_disabled = tqdm_env_disabled  # one definition, shared with the analysis bars


def label(cfg) -> str:
    """A run's bar label: model, target, n and seed."""
    model = "scratchpad " if cfg.model == "scratchpad" else ""
    return f"{model}{cfg.target} n={cfg.n} seed={cfg.seed}"


class RunReporter(Callback):
    """Sends a run's training progress to ``sink`` (at most ``REPORTS_PER_RUN`` times, and at
    most once per ``MIN_INTERVAL`` seconds, except the first and last message). Training is
    split into more C stretches, which does not change its results (the data stream and the
    optimizer are keyed by the step)."""

    def __init__(self, sink, cfg, total=None):
        self.total = cfg.steps if total is None else total
        super().__init__(every=max(1, self.total // REPORTS_PER_RUN))
        self.sink = sink
        self.base = dict(key=cfg.key, label=label(cfg), total=self.total)
        self._last = 0.0

    def send(self, step, loss=None, phase="train", force=False):
        now = time.monotonic()
        if not force and now - self._last < MIN_INTERVAL:
            return
        self._last = now
        self.sink.put(dict(self.base, step=int(step), loss=None if loss is None else float(loss), phase=phase))

    def __call__(self, trainer):
        rows = trainer._rows
        loss = rows[-1].get("loss") if rows else None
        self.send(trainer.step_count, loss, force=trainer.step_count >= self.total)
        return None


class RunBars:
    """One tqdm bar per run in flight, fed by ``RunReporter`` messages from any thread."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self._bars = {}
        self._finished = set()
        self._lock = threading.Lock()

    def __call__(self, message) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        with self._lock:
            key = message["key"]
            if key in self._finished:  # a late message after the run's result
                return
            bar = self._bars.get(key)
            if bar is None:
                bar = self._bars[key] = tqdm(total=message["total"], desc=message["label"], unit="step", leave=False,
                                             disable=env_disabled())
            bar.n = min(message["step"], message["total"])
            postfix = {} if message.get("loss") is None else {"loss": f"{message['loss']:.3g}"}
            if message.get("phase") != "train":
                postfix["phase"] = message["phase"]
            bar.set_postfix(postfix, refresh=False)
            bar.refresh()

    def finish(self, key) -> None:
        """The run's result arrived: close its bar and ignore its late messages."""
        with self._lock:
            self._finished.add(key)
            bar = self._bars.pop(key, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        with self._lock:
            bars, self._bars = list(self._bars.values()), {}
        for bar in bars:
            bar.close()

    @property
    def open_keys(self) -> list:
        with self._lock:
            return list(self._bars)


class CallSink:
    """A sink in the driver's own process: ``put`` hands the message straight to ``handler``."""

    def __init__(self, handler):
        self.handler = handler

    def put(self, message):
        self.handler(message)


class QueueDrain:
    """Drains a (multiprocessing) queue into ``handler`` on a daemon thread until ``stop``."""

    def __init__(self, queue, handler):
        self.queue, self.handler = queue, handler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensiformer-run-progress", daemon=True)
        self._thread.start()

    def _run(self):
        import queue as queue_module

        while not self._stop.is_set():
            try:
                message = self.queue.get(timeout=0.1)
            except queue_module.Empty:
                continue
            except (EOFError, OSError):  # the queue went away with the pool
                return
            self.handler(message)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


class DaskSink:
    """A sink on a Dask worker: the message becomes an event of ``topic``, which the driver's
    client subscribes to (``Client.subscribe_topic``)."""

    def __init__(self, topic):
        self.topic = topic

    def put(self, message):
        from distributed import get_worker

        try:
            get_worker().log_event(self.topic, message)
        except ValueError:  # not on a worker (e.g. a test calling the task directly): no bar
            pass
