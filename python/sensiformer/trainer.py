"""Training: the C loop runs whole stretches of steps; Python only logs between them."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import _native
from ._validation import (MAX_INT64, as_tokens, as_values, check_bool, check_choice, check_count, check_int,
                          check_seed, resolve_threads)
from ._vocabulary import LOSSES, SAMPLERS
from .model import FORWARD_TOKENS
from .optim import AdamW, Optimizer
from .seq2seq import Seq2SeqTransformer
from .targets import Target, all_inputs, inputs_from_indices

if TYPE_CHECKING:
    from ._typing import ArrayLike, Callable, EngineModel, PathLike, Sequence

# sf_sampler_kind in csrc/sf.h
_UNIFORM, _SUBSET, _DATASET = SAMPLERS["uniform"], SAMPLERS["subset"], SAMPLERS["dataset"]
# engine status codes (csrc/sf.h)
_OK, _EINVAL, _ENOMEM, _EINTR, _ENUMERIC = range(5)
_EXACT_EVAL_MAX_N = 16
_FIT_LOCK = threading.Lock()
_MAX_BATCH = 1 << 24


@contextlib.contextmanager
def _defer_interrupt():
    """Hold back SIGINT for a few lines of bookkeeping, then deliver it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        signal.raise_signal(signal.SIGINT)


class DivergenceError(FloatingPointError):
    """Training stopped because the loss or the gradient stopped being finite.

    The model keeps the parameters from before the failing step; ``trainer.status`` is
    ``"diverged"`` and the history ends at the last finite step.
    """


class Callback:
    """Runs every ``every`` steps during ``Trainer.fit``; may return metrics for the history.

    Subclass and implement ``__call__(self, trainer) -> dict | None``, or wrap a function with
    ``Callback(fn, every=k)``.
    """

    def __init__(self, fn: Callable[[Trainer], dict | None] | None = None, *, every: int = 100) -> None:
        self.every = check_int(every, "every", 1)
        self._fn = fn

    def __call__(self, trainer):
        if self._fn is None:
            raise NotImplementedError("subclass Callback or pass fn")
        return self._fn(trainer)


class Trainer:
    """Train a ``Transformer`` or a ``Seq2SeqTransformer`` on a target function (or a fixed dataset)
    with the C loop.

    A ``Seq2SeqTransformer`` trains by teacher forcing on a sequence target (``targets.Prefix``,
    e.g. ``targets.PrefixParity(n)``, the paper's scratchpad): decoder input [SOS, y_1..y_n], MSE
    on every output; the logged accuracy is per token, and ``evaluate`` adds the autoregressive
    accuracy (per token and per sequence).

    Parameters
    ----------
    model : Transformer or Seq2SeqTransformer
    target : Target, optional
        The function to learn; batches of fresh uniform inputs are drawn every step (or from
        ``train_subset``). Omit it when passing ``data``.
    loss : {"mse", "bce"}
        MSE on raw outputs (the paper) or BCE with logits.
    optimizer : Optimizer, optional
        Default: a fresh ``AdamW(lr=3e-4, weight_decay=0.1)``, the paper's setting.
    batch_size : int
    seed : int
        Seed of the data stream: batch k is a pure function of (seed, k).
    train_subset : array of int, optional
        Indices of the inputs to train on (``restricted_subset(n, m, seed)`` gives the official
        restricted sampler's set); batches are drawn from it with replacement.
    n_threads : int, optional
    labels : {"01", "pm1"}
        Regress on the target's {0,1} values, or on 2y-1 (the paper's ``negative_value=-1``).
    data : (x, y), optional
        Train on these rows instead of a target: x (rows, length) tokens, y (rows,) labels (a
        ``Seq2SeqTransformer``: y (rows, length) 0/1 label sequences).
    seq_len : int, optional
        Input length (default: the target's n or the data's width).
    """

    def __init__(self, model: EngineModel, target: Target | None = None, *, loss: str = "mse",
                 optimizer: Optimizer | None = None, batch_size: int = 1024, seed: int = 0,
                 train_subset: ArrayLike | None = None, n_threads: int | None = None, labels: str = "01",
                 data: tuple[ArrayLike, ArrayLike] | None = None, seq_len: int | None = None) -> None:
        self.model = model
        self.loss = check_choice(loss, "loss", tuple(LOSSES))
        self.labels = check_choice(labels, "labels", ("01", "pm1"))
        if loss == "bce" and labels == "pm1":
            raise ValueError("loss='bce' needs labels='01'")
        self.batch_size = check_int(batch_size, "batch_size", 1, _MAX_BATCH)
        self.seed = check_seed(seed)
        self.n_threads = None if n_threads is None else check_int(n_threads, "n_threads", 1, 512)
        self.optimizer = AdamW(lr=3e-4, weight_decay=0.1) if optimizer is None else optimizer
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(f"optimizer must be a sensiformer optimizer (AdamW, Adam, SGD), got {optimizer!r}")
        self.target = target
        self._set_data(target, train_subset, data, seq_len)
        self.optimizer.bind(model)  # last: a Trainer that fails validation leaves the optimizer free
        self.step_count = 0
        # optimizer steps not taken by fit (a reused optimizer's, Trainer.step's): the optimizer's
        # step count is always step_count + this, which checkpoints record and check
        self._optimizer_offset = self.optimizer.step_count
        self.status = "ready"
        self._chunk = None  # (first step, record, done) of the C chunk in flight
        self._fit_thread = None  # ident of the thread inside fit
        self._rows = []

    @property
    def _seq2seq(self) -> bool:
        return isinstance(self.model, Seq2SeqTransformer)

    def __repr__(self):
        source = repr(self.target) if self.target is not None else f"data of {len(self.data[0])} rows"
        last = self._rows[-1].get("loss") if self._rows else None
        loss = "" if last is None else f", last_loss={last:.4g}"
        return (f"Trainer({self.model!r}, {source}, optimizer={self.optimizer!r}, loss={self.loss!r}, "
                f"batch_size={self.batch_size}, seed={self.seed}, step={self.step_count}, "
                f"status={self.status!r}{loss})")

    # pickling and deep copies (a process pool, joblib, Dask): model, optimizer state, counters and
    # history travel; the copy resumes bit-identically (batch k is a function of (seed, k))
    def __getstate__(self):
        self._refuse_during_fit_elsewhere("pickling the trainer")
        return dict(self.__dict__, _chunk=None, _fit_thread=None)

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ---- data ----------------------------------------------------------------------------
    def _set_data(self, target, train_subset, data, seq_len):
        if (target is None) == (data is None):
            raise ValueError("give exactly one of target and data")
        self.train_subset = None
        self.data = None
        if target is not None:
            if not isinstance(target, Target):
                raise TypeError(f"target must be a sensiformer.targets.Target, got {target!r}")
            if self._seq2seq and not target.sequence:
                raise TypeError(f"a Seq2SeqTransformer trains on a label sequence: give a sequence target such as "
                                f"targets.PrefixParity(n) or targets.Prefix({target!r}), not {target!r}")
            if not self._seq2seq and target.sequence:
                raise TypeError(f"{target!r} has a label per position: train a Seq2SeqTransformer on it")
            if self._seq2seq and not target.boolean:
                raise ValueError(f"teacher forcing feeds the labels back as tokens, so {target!r} must be Boolean")
            self.seq_len = target.n if seq_len is None else check_int(seq_len, "seq_len", 1)
            self._check_seq_len()  # before anything is allocated for it
            if target.engine_spec()[2] is not None and self.seq_len != target.n:
                raise ValueError(f"seq_len={self.seq_len} but the target's truth table is for n={target.n}")
            try:  # the engine knows which positions a target reads (SparseParity, Junta, FourierFunction)
                _native.target_eval(target=target.engine_spec(), x=np.zeros((1, self.seq_len), np.uint8))
            except ValueError as err:
                raise ValueError(f"seq_len={self.seq_len} does not fit {target!r}: {err}") from err
            if train_subset is not None:
                subset = np.asarray(train_subset)
                if subset.size and not np.issubdtype(subset.dtype, np.integer):
                    raise TypeError(f"train_subset must hold integer input indices, got dtype {subset.dtype}")
                if subset.ndim != 1 or subset.size == 0:
                    raise ValueError("train_subset must be a non-empty 1-D array of input indices")
                if self.seq_len > 62:
                    raise ValueError("train_subset needs seq_len <= 62")
                if subset.min() < 0 or subset.max() >= 2**self.seq_len:
                    raise ValueError(f"train_subset indices must lie in [0, 2**{self.seq_len})")
                self.train_subset = np.ascontiguousarray(subset, dtype=np.int64)
            self._sampler = (_SUBSET if self.train_subset is not None else _UNIFORM, self.train_subset, None, None)
            self._target_spec = target.engine_spec()
        else:
            if train_subset is not None:
                raise ValueError("train_subset only applies to a target")
            if not (isinstance(data, (tuple, list)) and len(data) == 2):
                raise TypeError("data must be a pair (x, y)")
            x = as_tokens(data[0], "data x", self.model.n_positions)
            if self._seq2seq:
                y = np.ascontiguousarray(data[1], dtype=np.float64)
                if y.shape != x.shape:
                    raise ValueError(f"data y must hold a label per position, shape {x.shape}, got {y.shape}")
                if not np.all((y == 0) | (y == 1)):
                    raise ValueError("teacher forcing feeds the labels back as tokens, so data y must be 0/1")
            else:
                y = as_values(data[1], "data y", x.shape[0], np.float64)
            if seq_len is not None and check_int(seq_len, "seq_len", 1) != x.shape[1]:
                raise ValueError(f"seq_len={seq_len} but the data's inputs have length {x.shape[1]}")
            if self.loss == "bce" and not np.all((y >= 0) & (y <= 1)):
                raise ValueError("loss='bce' needs data labels in [0, 1]")
            self.seq_len = x.shape[1]
            self.data = (x, y)
            self._sampler = (_DATASET, None, x, y)
            # the kind is unused by the dataset sampler; prefix: a label per position
            self._target_spec = (0, self.seq_len, None, {"prefix": True}) if self._seq2seq else (0, self.seq_len, None)
        self._check_seq_len()

    def _check_seq_len(self):
        if self.seq_len > self.model.n_positions:
            raise ValueError(f"inputs of length {self.seq_len} exceed the model's n_positions={self.model.n_positions}")

    @property
    def _threshold(self):
        return 0.5 if (self.loss == "mse" and self.labels == "01") else 0.0

    def sample_batch(self, step: int | None = None, *, uniform: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Batch number ``step`` (default: the next one) of the training stream: ``(x, y)``.

        ``uniform=True`` draws the batch from the uniform distribution over all inputs, labelled by
        the target, whatever the training sampler (a ``train_subset``): the inputs of the official
        final measurement. A trainer on ``data`` has no target to label them and refuses.
        """
        step = self.step_count if step is None else check_count(step, "step")
        sampler = self._sampler
        if check_bool(uniform, "uniform"):
            if self.target is None:
                raise ValueError("uniform=True needs a target to label the inputs; this trainer samples from data")
            sampler = (_UNIFORM, None, None, None)
        return _native.sample_batch(target=self._target_spec, sampler=sampler, seed=self.seed, step=step,
                                    batch_size=self.batch_size, seq_len=self.seq_len)

    # ---- training --------------------------------------------------------------------------
    def fit(self, steps: int, *, log_every: int = 100,
            callbacks: Sequence[Callback | Callable[[Trainer], dict | None]] = (),
            progress: bool = True) -> pd.DataFrame:
        """Train for ``steps`` more steps; returns the whole history so far.

        Each history row summarises ``log_every`` steps: mean training loss and accuracy,
        the learning rate and mean gradient norm, wall time, and the metrics of callbacks that
        ran at that step. Ctrl-C stops within a second and keeps every finished step.
        """
        steps = check_count(steps, "steps")
        if self.step_count + steps > MAX_INT64:
            raise ValueError(f"steps={steps} would take the step count beyond 2**63 - 1")
        log_every = check_count(log_every, "log_every", 1)
        callbacks = [cb if hasattr(cb, "every") else Callback(cb, every=log_every) for cb in callbacks]
        from tqdm.auto import tqdm

        end = self.step_count + steps
        window = []
        with self._inside_fit():
            bar = tqdm(total=steps, disable=not progress, desc="training", unit="step", leave=True)
            started = time.perf_counter()
            self.status = "running"
            try:
                self._fit_loop(end, log_every, callbacks, window, started, bar, progress)
                self.status = "ok"
            except BaseException as err:
                # Ctrl-C or an error in a callback between C chunks: keep what finished
                if self.status == "running":
                    self._absorb_chunk(window)
                    self._log(window, started, {})
                    self.status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
                raise
            finally:
                bar.close()
        return self.history

    @contextlib.contextmanager
    def _inside_fit(self):
        """Mark the trainer as inside fit in this thread (other threads' checkpoints are refused)."""
        with _FIT_LOCK:  # two threads starting fit on one trainer: exactly one wins
            if self._fit_thread is not None:
                raise RuntimeError("this trainer is already inside fit (one fit at a time per trainer)")
            self._fit_thread = threading.get_ident()
        try:
            yield
        finally:
            self._fit_thread = None

    def _refuse_during_fit_elsewhere(self, what):
        """Checkpoints read or write the trainer's bookkeeping, which fit updates between its C
        stretches: refuse them from another thread while fit runs (callbacks of fit may)."""
        fitting = self._fit_thread
        if fitting is not None and fitting != threading.get_ident():
            raise RuntimeError(f"{what} refused: another thread is inside this trainer's fit; call it from a fit "
                               "callback (e.g. sf.Checkpoint) or after fit returns")

    def _fit_loop(self, end, log_every, callbacks, window, started, bar, progress):
        """Alternate C chunks (up to the next log or callback step) with logging and callbacks."""
        while self.step_count < end:
            boundaries = [end, (self.step_count // log_every + 1) * log_every]
            boundaries += [(self.step_count // cb.every + 1) * cb.every for cb in callbacks]
            chunk = min(boundaries) - self.step_count
            record, done = np.zeros((4, chunk)), np.zeros(1, dtype=np.int64)
            self._chunk = (self.step_count, record, done)
            status, message, pending = _native.train(
                model=self.model._engine, optimizer=self.optimizer._engine, target=self._target_spec,
                sampler=self._sampler, loss=LOSSES[self.loss], pm1=self.labels == "pm1", batch_size=self.batch_size,
                seq_len=self.seq_len, seed=self.seed, threshold=self._threshold, first_step=self.step_count,
                n_steps=chunk, n_threads=resolve_threads(self.n_threads), record=record, done=done)
            finished = self._absorb_chunk(window)
            bar.update(finished)
            if status != _OK:
                self._log(window, started, {})
                window.clear()
                self.status = "interrupted" if status == _EINTR else "diverged"
                if status == _ENUMERIC:
                    raise DivergenceError(message)
                raise pending if pending is not None else KeyboardInterrupt(message)
            extra = {}
            for cb in callbacks:
                if self.step_count % cb.every == 0:
                    extra.update(cb(self) or {})
            if self.step_count % log_every == 0 or self.step_count == end or extra:
                self._log(window, started, extra)
                window.clear()
                if progress and self._rows:
                    bar.set_postfix(loss=f"{self._rows[-1].get('loss', float('nan')):.4g}")

    def _absorb_chunk(self, window) -> int:
        """Move the steps the C loop finished into the window and the step count, once.

        The loop records its progress in the chunk's buffers as it goes; this runs with Ctrl-C
        deferred, and again from ``fit``'s error path, so an interrupt landing between the C
        call and this bookkeeping loses nothing and counts nothing twice.
        """
        with _defer_interrupt():
            if self._chunk is None:
                return 0
            start, record, done = self._chunk
            n = int(done[0])
            window.append(tuple(record[:, :n]))
            self.step_count = start + n
            self._chunk = None
        return n

    def _log(self, window, started, extra):
        if not window or sum(len(w[0]) for w in window) == 0:
            if extra:
                self._rows.append(dict(step=self.step_count, **extra))
            return
        loss, acc, lr, gn = (np.concatenate([w[i] for w in window]) for i in range(4))
        self._rows.append(dict(step=self.step_count, loss=float(loss.mean()), accuracy=float(acc.mean()),
                               lr=float(lr[-1]), grad_norm=float(gn.mean()),
                               time=time.perf_counter() - started, **extra))

    def step(self, x: ArrayLike, y: ArrayLike) -> float:
        """One update on the given batch; returns its loss (before the update). A seq2seq model takes
        label sequences y (batch, n) and teacher forcing."""
        value = self.model._loss(x, y, None, self.loss, True, self.n_threads)[0]
        self.optimizer.step(n_threads=self.n_threads)
        self._optimizer_offset += 1  # the data stream's position (step_count) did not move
        return value

    def save_checkpoint(self, path: PathLike) -> None:
        """Save model, optimizer state, data-stream position and history atomically."""
        from . import checkpoint

        self._refuse_during_fit_elsewhere("save_checkpoint")
        checkpoint.save(self, path)

    def load_checkpoint(self, path: PathLike) -> None:
        """Restore a checkpoint of an equivalent trainer; training then continues bit-identically.

        A damaged file or one from a different setup raises ``CheckpointError`` and changes
        nothing.
        """
        from . import checkpoint

        self._refuse_during_fit_elsewhere("load_checkpoint")
        checkpoint.load(self, path)

    @property
    def history(self) -> pd.DataFrame:
        """One row per log point (see ``fit``)."""
        return pd.DataFrame(self._rows)

    # ---- evaluation ------------------------------------------------------------------------
    def evaluate(self, *, batches: int = 10, batch_size: int | None = None, exact: bool | None = None,
                 seed: int | None = None) -> dict:
        """Loss and accuracy of the current model on the training distribution.

        Exact over all 2^n inputs when ``exact`` (default when n <= 16 with uniform inputs),
        over the whole training set for ``train_subset``/``data``, and otherwise over
        ``batches`` fresh batches from an evaluation stream (seeded by ``seed``). Labels are the
        target's clean values (a target's label noise affects training batches only).

        A seq2seq model: teacher-forced loss and per-token accuracy, plus ``autoregressive_accuracy``
        (per token, the paper's measure) and ``sequence_accuracy`` of ``generate`` (KV cache).
        """
        exact = None if exact is None else check_bool(exact, "exact")
        self.model.require_finite("evaluate")
        if self.data is not None:
            x, y = self.data
        elif self.train_subset is not None:
            x = inputs_from_indices(np.unique(self.train_subset), self.seq_len)
            y = self._clean_labels(x)
        else:
            exact = self.seq_len <= _EXACT_EVAL_MAX_N if exact is None else exact
            if exact:
                x = all_inputs(self.seq_len)
            else:
                batches = check_int(batches, "batches", 1)
                bs = self.batch_size if batch_size is None else check_int(batch_size, "batch_size", 1, _MAX_BATCH)
                eval_seed = (check_seed(self.seed if seed is None else seed) ^ 0x5EEDE7A1) & (2**64 - 1)
                pairs = [_native.sample_batch(target=self._target_spec, sampler=(_UNIFORM, None, None, None),
                                              seed=eval_seed, step=k, batch_size=bs, seq_len=self.seq_len)
                         for k in range(batches)]
                x = np.concatenate([p[0] for p in pairs])
            y = self._clean_labels(x)
        y_used = 2 * y - 1 if self.labels == "pm1" else y
        if self._seq2seq:
            return self._evaluate_seq2seq(x, y, y_used)
        rows = max(1, FORWARD_TOKENS // self.seq_len)  # bounds the model's activation workspace
        out = np.concatenate([self.model.forward(x[i:i + rows], n_threads=self.n_threads)
                              for i in range(0, len(x), rows)]).astype(np.float64)
        loss = self._loss_sum(out, y_used) / len(out)
        label_threshold = 0.0 if self.labels == "pm1" else 0.5
        accuracy = float(np.mean((out > self._threshold) == (y_used > label_threshold)))
        return dict(loss=loss, accuracy=accuracy, n_inputs=int(len(x)))

    def _loss_sum(self, out, y) -> float:
        """Sum of the losses of float64 outputs against labels; labels so large that a squared error
        overflows give inf, as IEEE arithmetic says, without a RuntimeWarning."""
        with np.errstate(over="ignore", invalid="ignore"):
            if self.loss == "mse":
                return float(np.sum((out - y) ** 2))
            return float(np.sum(np.maximum(out, 0) - out * y + np.log1p(np.exp(-np.abs(out)))))

    def _clean_labels(self, x):
        """The target's labels of x as the training loop computes them, without label noise (a
        target may be trained on inputs longer than its n: PARITY of seq_len bits)."""
        if x.shape[1] == self.target.n:
            return self.target(x)
        kind, n, table, *options = self._target_spec
        options = {k: v for k, v in (options[0] if options else {}).items() if k != "noise"}
        return _native.target_eval(target=(kind, n, table, options), x=x)

    def _evaluate_seq2seq(self, x, y, y_used) -> dict:
        """Teacher-forced loss and token accuracy, and the autoregressive accuracies, in chunks."""
        chunk = max(1, FORWARD_TOKENS // self.seq_len)  # encoder and decoder hold rows x positions
        label_threshold = 0.0 if self.labels == "pm1" else 0.5
        loss_sum = correct = right_tokens = right_rows = 0.0
        for i in range(0, len(x), chunk):
            xs, ys, us = x[i:i + chunk], y[i:i + chunk], y_used[i:i + chunk]
            out = self.model.forward(xs, self.model.teacher_forcing(ys), n_threads=self.n_threads)[:, :-1].astype(np.float64)
            loss_sum += self._loss_sum(out, us)
            correct += float(np.sum((out > self._threshold) == (us > label_threshold)))
            tokens = self.model.generate(xs, threshold=self._threshold, n_threads=self.n_threads)
            match = tokens == (us > label_threshold)
            right_tokens += float(match.sum())
            right_rows += float(match.all(axis=1).sum())
        labels = float(y.size)
        return dict(loss=loss_sum / labels, accuracy=correct / labels, autoregressive_accuracy=right_tokens / labels,
                    sequence_accuracy=right_rows / len(x), n_inputs=int(len(x)))
