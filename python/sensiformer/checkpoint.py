"""Trainer checkpoints: model, optimizer state, data-stream position and history in one file.

Files are ``.npz`` archives (no pickle) written atomically (temporary file, fsync, rename), so
a crash mid-write leaves the previous checkpoint intact. A SHA-256 over the metadata and every
array detects truncation or corruption; a damaged file is refused whole, never half-loaded.
Resuming continues bit-identically: the data stream is a pure function of (seed, step).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ._files import save_npz_atomically
from .model import check_format_version

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The checkpoint is damaged or does not match the trainer it is loaded into."""


def _digest(meta: str, arrays: dict) -> str:
    h = hashlib.sha256(meta.encode())
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _fingerprint(*parts) -> str:
    """SHA-256 of nested tuples/dicts of scalars and arrays (e.g. a target's engine spec)."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (tuple, list)):
            h.update(b"(")
            for item in x:
                feed(item)
            h.update(b")")
        elif isinstance(x, np.ndarray):
            h.update(str((x.dtype, x.shape)).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        else:
            h.update(repr(x).encode())

    feed(parts)
    return h.hexdigest()


def _describe(trainer) -> dict:
    """What must match for a checkpoint to belong to a trainer (data by fingerprint)."""
    return dict(model=trainer.model.config, optimizer_kind=trainer.optimizer._kind,
                optimizer=trainer.optimizer.hyper, loss=trainer.loss, labels=trainer.labels,
                batch_size=trainer.batch_size, seed=trainer.seed, seq_len=trainer.seq_len,
                data=_fingerprint(trainer._target_spec, trainer._sampler))


def save(trainer, path) -> None:
    """Write ``trainer``'s full state to ``path`` atomically.

    Parameters, optimizer state and counters are copied under the model's busy guard (so never
    from the middle of a training step), and the counters must agree: the optimizer's step count
    is the trainer's plus the steps the trainer knows were taken outside ``fit``.
    """
    path = Path(path)
    with trainer.model._exclusive("save_checkpoint"):
        params = trainer.model.flat.copy()
        opt = trainer.optimizer._snapshot()
        step_count, offset = trainer.step_count, trainer._optimizer_offset
    if opt["step"] != step_count + offset:
        raise RuntimeError(f"save_checkpoint refused: the optimizer has taken {opt['step']} steps but the trainer "
                           f"accounts for {step_count + offset} ({step_count} in fit + {offset} outside it); was the "
                           "optimizer stepped directly, or is a step in flight?")
    trainer.model.require_finite("save_checkpoint", params)
    arrays = dict(params=params, exp_avg=opt["exp_avg"], exp_avg_sq=opt["exp_avg_sq"])
    meta = json.dumps(dict(format_version=FORMAT_VERSION, describe=_describe(trainer),
                           step_count=step_count, optimizer_step=opt["step"], optimizer_offset=offset,
                           status=trainer.status, history=trainer._rows), default=float)
    checksum = _digest(meta, arrays)
    save_npz_atomically(path, {"__meta__": np.array(meta), "__checksum__": np.array(checksum), **arrays})


def load(trainer, path) -> None:
    """Restore ``trainer`` (already built with the same model, optimizer and data settings).

    Everything is read and checked first; the trainer is written only when all of it is valid.
    """
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
            contents = {k: data[k] for k in data.files}
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # OSError, zip errors, and whatever NumPy's header parser raises on damage
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
    if "__meta__" not in contents or "__checksum__" not in contents:
        raise CheckpointError(f"{path} is not a sensiformer checkpoint")
    meta = str(contents.pop("__meta__"))
    checksum = str(contents.pop("__checksum__"))
    if _digest(meta, contents) != checksum:
        raise CheckpointError(f"{path} is corrupted (checksum mismatch); nothing was loaded")
    try:
        state = json.loads(meta)
    except ValueError as err:
        raise CheckpointError(f"{path} has unreadable metadata ({err})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has metadata of the wrong kind ({type(state).__name__})")
    try:
        check_format_version(state.get("format_version"), FORMAT_VERSION)
    except ValueError as err:
        raise CheckpointError(f"{path} has {err}") from err
    expected = json.loads(json.dumps(_describe(trainer), default=float))
    if state.get("describe") != expected:
        described = state.get("describe") if isinstance(state.get("describe"), dict) else {}
        diff = sorted(k for k in expected if described.get(k) != expected[k])
        raise CheckpointError(f"{path} belongs to a different setup (differs in: {', '.join(diff)}; "
                              "'data' covers the target, its options and noise, train_subset and data)")
    params, optimizer_state, step_count, offset, status, history = _checked_contents(trainer, path, state, contents)
    # everything checked: now write
    with trainer.model._exclusive("load_checkpoint"):
        trainer.model.flat[...] = params
        trainer.optimizer._write_state(*optimizer_state)
        trainer.step_count = step_count
        trainer._optimizer_offset = offset
        trainer.status = status
        trainer._rows = history


def _checked_contents(trainer, path, state, contents):
    """The values ``load`` writes, each validated; a checksum-valid file can still hold bad ones."""
    from ._validation import as_finite_array, check_count

    try:
        if "params" not in contents:
            raise KeyError("params")
        if contents["params"].shape != trainer.model.flat.shape:
            raise ValueError(f"{contents['params'].shape} parameters, the model has {trainer.model.flat.shape}")
        params = as_finite_array(contents["params"], "params", trainer.model.dtype)
        optimizer_state = trainer.optimizer._checked_state(dict(
            kind=trainer.optimizer._kind, step=state.get("optimizer_step"), exp_avg=contents.get("exp_avg"),
            exp_avg_sq=contents.get("exp_avg_sq")))  # (exp_avg, exp_avg_sq, step)
        step_count = check_count(state.get("step_count"), "step_count")
        # files of before the offset was recorded: their fit-only trainers had none
        offset = check_count(state.get("optimizer_offset", 0), "optimizer_offset")
        if optimizer_state[2] != step_count + offset:
            raise ValueError(f"its counters disagree: optimizer step {optimizer_state[2]}, trainer step "
                             f"{step_count} + {offset} steps outside fit (saved in the middle of a step?)")
        status, history = state.get("status"), state.get("history")
        if not isinstance(status, str):
            raise TypeError(f"status must be a string, got {status!r}")
        if not (isinstance(history, list) and all(isinstance(row, dict) for row in history)):
            raise TypeError("history must be a list of rows (dicts)")
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path} holds invalid contents ({type(err).__name__}: {err}); nothing was loaded") \
            from err
    return params, optimizer_state, step_count, offset, status, list(history)


class Checkpoint:
    """A ``Trainer.fit`` callback that saves a checkpoint every ``every`` steps."""

    def __init__(self, path, *, every=1000):
        from ._validation import check_int

        self.path = Path(path)
        self.every = check_int(every, "every", 1)

    def __call__(self, trainer):
        save(trainer, self.path)
        return None
