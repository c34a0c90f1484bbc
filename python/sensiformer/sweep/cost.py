"""What a sweep will cost: CPU seconds per run, from a short calibration on this machine.

Each distinct run shape (model, length, width, batch, dtype, ...) is built once and timed for a
few training steps and one forward pass of a batch, on one thread (what a run gets when the
local pool is full). A run's estimate is its training steps times the step time plus its
probes and evaluation counted as forward passes. The probes are estimated, not timed, so
treat the result as a guide to the order of magnitude (measured within a factor of about 2
on the presets).
"""

from __future__ import annotations

import time

import numpy as np

#: training steps timed per shape, after one warm-up step (workspace allocation, caches)
CALIBRATION_STEPS = 2


def _shape(cfg) -> tuple:
    return (cfg.model, cfg.n, cfg.positions, cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.d_ff, cfg.norm, cfg.dtype,
            cfg.batch_size)


def _time_shape(cfg) -> tuple[float, float]:
    """(seconds per training step, seconds per forward pass of a batch), on one thread."""
    from .runner import _build

    cfg = cfg.replace(target="parity" if cfg.target in ("random", "table") else cfg.target, target_table=None,
                      train_subset=None, init="pytorch", lr_schedule="constant")
    model, _, trainer, _ = _build(cfg, 1)
    trainer.fit(1, progress=False)
    started = time.process_time()
    trainer.fit(CALIBRATION_STEPS, progress=False)
    step = (time.process_time() - started) / CALIBRATION_STEPS
    x, y = trainer.sample_batch(step=0)
    model.loss(x, y, n_threads=1)  # warm-up; a forward pass either model kind takes with its labels
    started = time.process_time()
    model.loss(x, y, n_threads=1)
    return step, time.process_time() - started


def _forward_passes(cfg) -> float:
    """Forward passes of a batch that a run's evaluation and probes make, roughly."""
    exact_inputs = 2**cfg.n if cfg.n <= 16 else 0
    evaluation = exact_inputs / cfg.batch_size if exact_inputs else cfg.eval_batches
    final, dyn = cfg.final, cfg.dynamics
    probes = final.batches * (final.sharpness_repeats + 3) if final.active else 0
    dynamics = (cfg.steps // dyn.every) * dyn.batches * (dyn.repeats + 3) if dyn.active else 0
    extras = (len(cfg.length_evaluation.lengths) * evaluation + cfg.train_sharpness.repeats
              + (2**cfg.n / cfg.batch_size if cfg.sensitivity.active or cfg.predictions.active else 0))
    return evaluation + probes + dynamics + extras


def cpu_seconds(configs) -> np.ndarray:
    """Estimated CPU seconds of each configuration (``RunConfig``s), calibrated on this machine.

    Takes a few training steps per distinct shape: seconds for a grid of a few dozen shapes.
    """
    timings = {}
    out = np.empty(len(configs))
    for i, cfg in enumerate(configs):
        shape = _shape(cfg)
        if shape not in timings:
            timings[shape] = _time_shape(cfg)
        step, forward = timings[shape]
        out[i] = cfg.steps * step + _forward_passes(cfg) * forward
    return out
