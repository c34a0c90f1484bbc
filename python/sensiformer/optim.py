"""Optimizers with torch.optim semantics, run by the C engine.

An optimizer is configured first and bound to one model when training starts (``Trainer``
does this; ``bind`` does it by hand). Its state (moments, step count) lives in the engine,
laid out like ``model.flat``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _native
from ._validation import as_finite_array, check_bool, check_choice, check_count, check_float, resolve_threads
from ._vocabulary import OPTIMIZERS, SCHEDULES

if TYPE_CHECKING:
    from ._typing import Any, EngineModel



class Optimizer:
    """Common machinery: configuration, binding to a model, state and the LR schedule.

    Parameters common to all optimizers
    -----------------------------------
    lr : float
        Peak learning rate.
    weight_decay : float
    decay_all : bool
        Apply weight decay to every parameter, as the paper does (default); ``False`` excludes
        LayerNorm gains/biases, all biases and the embeddings.
    schedule : {"constant", "cosine"}
        "cosine": linear warm-up over ``warmup_steps`` then cosine decay to ``min_lr`` at
        ``total_steps`` ("constant" with ``warmup_steps > 0`` warms up, then stays flat).
    clip_norm : float or None
        Clip the global gradient norm as ``torch.nn.utils.clip_grad_norm_``.
    """

    _kind = ""

    def __init__(self, lr: float, weight_decay: float, *, decay_all: bool = True, schedule: str = "constant",
                 warmup_steps: int = 0, total_steps: int = 0, min_lr: float = 0.0, clip_norm: float | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False) -> None:
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair, got {betas!r}")
        check_choice(schedule, "schedule", tuple(SCHEDULES))
        self.hyper = dict(
            lr=check_float(lr, "lr", 0.0), beta1=check_float(betas[0], "betas[0]", 0.0, 1.0 - 1e-16),
            beta2=check_float(betas[1], "betas[1]", 0.0, 1.0 - 1e-16), eps=check_float(eps, "eps", 0.0),
            weight_decay=check_float(weight_decay, "weight_decay", 0.0),
            momentum=check_float(momentum, "momentum", 0.0), dampening=check_float(dampening, "dampening", 0.0, 1.0),
            nesterov=check_bool(nesterov, "nesterov"), decay_all=check_bool(decay_all, "decay_all"), schedule=schedule,
            warmup_steps=check_count(warmup_steps, "warmup_steps"), total_steps=check_count(total_steps, "total_steps"),
            min_lr=check_float(min_lr, "min_lr", 0.0),
            clip_norm=0.0 if clip_norm is None else check_float(clip_norm, "clip_norm", 0.0))
        if schedule == "cosine" and self.hyper["total_steps"] and self.hyper["total_steps"] < self.hyper["warmup_steps"]:
            raise ValueError("total_steps must be >= warmup_steps")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")
        if schedule == "constant" and self.hyper["warmup_steps"]:
            self.hyper["schedule"] = "cosine"  # warm-up then flat: a cosine with no horizon
        self._engine = None
        self._model = None

    def bind(self, model: EngineModel) -> "Optimizer":
        """Attach to ``model`` (allocates the state). An optimizer serves one model."""
        if self._model is not None:
            if self._model is not model:
                raise ValueError("this optimizer is already bound to another model; create a new one")
            return self
        h = self.hyper
        self._engine = _native.Optimizer(model=model._engine, kind=OPTIMIZERS[self._kind],
                                         **dict(h, schedule=SCHEDULES[h["schedule"]]))
        self._model = model
        return self

    # pickling and deep copies: the configuration, the model and a copy of the state; the engine
    # optimizer is rebuilt by binding to the (unpickled) model
    def __getstate__(self):
        state = dict(self.__dict__, _engine=None)
        state["_saved_state"] = None if self._engine is None else self.state_dict()
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved, model = state.pop("_saved_state"), state.pop("_model")
        self.__dict__.update(state, _engine=None, _model=None)
        if model is not None:
            self.bind(model)
            self._write_state(*self._checked_state(saved))

    def _bound(self):
        if self._engine is None:
            raise RuntimeError("bind(model) the optimizer first (Trainer does it for you)")
        return self._engine

    def step(self, *, n_threads: int | None = None) -> float:
        """One update from the model's gradient buffer; returns the gradient norm (pre-clipping)."""
        return self._bound().step(n_threads=resolve_threads(n_threads))

    def zero_grad(self) -> None:
        """Kept for PyTorch habits: gradients are overwritten by every backward, so a no-op."""

    @property
    def step_count(self) -> int:
        """Number of updates taken (torch's ``state['step']``)."""
        return self._bound().step_count

    def lr_at(self, step: int) -> float:
        """Learning rate of the update after ``step`` updates."""
        return self._bound().lr_at(check_count(step, "step"))

    def state_dict(self) -> dict:
        """Copies of the state: step count and moment buffers (laid out like ``model.flat``)."""
        self._bound()
        with self._model._exclusive("optimizer state_dict"):  # never from the middle of a step
            return self._snapshot()

    def _snapshot(self) -> dict:
        """``state_dict()`` without the guard (for callers that hold it)."""
        eng = self._bound()
        return dict(kind=self._kind, hyper=dict(self.hyper), step=eng.step_count, exp_avg=eng.state(0).copy(),
                    exp_avg_sq=eng.state(1).copy())

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; every entry is checked before anything is written."""
        checked = self._checked_state(state)
        with self._model._exclusive("optimizer load_state_dict"):
            self._write_state(*checked)

    def _write_state(self, exp_avg, exp_avg_sq, step) -> None:
        """Write checked state (for callers that hold the model's guard)."""
        eng = self._bound()
        eng.state(0)[...] = exp_avg
        eng.state(1)[...] = exp_avg_sq
        eng.step_count = step

    def _checked_state(self, state):
        """``(exp_avg, exp_avg_sq, step)`` of a state dict, validated, without writing anything."""
        eng = self._bound()
        if not hasattr(state, "get"):
            raise TypeError(f"state must be a dict as state_dict() returns, got {type(state).__name__}")
        if state.get("kind") != self._kind:
            raise ValueError(f"state is for {state.get('kind')!r}, this optimizer is {self._kind!r}")
        missing = [k for k in ("exp_avg", "exp_avg_sq", "step") if k not in state]
        if missing:
            raise KeyError(f"state lacks {', '.join(missing)}")
        moments = []
        for key, which in (("exp_avg", 0), ("exp_avg_sq", 1)):
            shape = eng.state(which).shape
            if np.shape(state[key]) != shape:
                raise ValueError(f"{key} has shape {np.shape(state[key])}, expected {shape}")
            moments.append(as_finite_array(state[key], key, np.float64))
        if np.any(moments[1] < 0):
            raise ValueError("exp_avg_sq must be >= 0 (a running mean of squared gradients)")
        return moments[0], moments[1], check_count(state["step"], "step")

    def __repr__(self):
        shown = {k: v for k, v in self.hyper.items() if k in ("lr", "weight_decay", "schedule")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class AdamW(Optimizer):
    """AdamW (decoupled weight decay), ``torch.optim.AdamW`` semantics and defaults."""

    _kind = "adamw"

    def __init__(self, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, **kwargs: Any) -> None:
        super().__init__(lr, weight_decay, betas=betas, eps=eps, **kwargs)


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient, ``torch.optim.Adam`` semantics."""

    _kind = "adam"

    def __init__(self, *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(lr, weight_decay, betas=betas, eps=eps, **kwargs)


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and dampening, ``torch.optim.SGD`` semantics."""

    _kind = "sgd"

    def __init__(self, *, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, **kwargs: Any) -> None:
        super().__init__(lr, weight_decay, momentum=momentum, dampening=dampening, nesterov=nesterov, **kwargs)
