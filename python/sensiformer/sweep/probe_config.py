"""What a run probes: the probe groups a ``RunConfig`` carries, each with its settings and their checks.

================================  ============================================================================
group (``RunConfig`` field)       probes
================================  ============================================================================
``ProbeSettings`` (probes)        what the probes share: sharpness noise and seed, blowup definition, the
                                  spectrum's Monte-Carlo samples
``FinalMeasurement`` (final)      loss, sharpness, blowup, parameter norm (and the spectrum) of the trained model
``Dynamics`` (dynamics)           the same every ``every`` steps during training (``Measure``)
``TrainSharpness``, ...           the extras: one spec per probe, run in ``RunConfig.extras``'s order
================================  ============================================================================

A probe that is off keeps its settings (``FinalMeasurement(enabled=False, batches=8)``), since they are part of
the run's key as they always were.

Every setting also has a flat name (``FinalMeasurement.batches`` is ``measure_batches``): the form in which a
configuration is hashed and stored (``RunConfig.to_dict``/``from_dict``), and the names experiments and the CLI
take as parameters. ``flat_name`` gives it; a field without one is stored under its own name.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Iterable

BLOWUP_DEFINITIONS = ("official", "theory")


def _flat(default, name):
    """A setting whose stored (flat) name differs from its field's."""
    return field(default=default, metadata={"flat": name})


def flat_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flat", f.name)


def _integer(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or int(value) != value:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def coerce_fields(obj, label=lambda f: f.name) -> None:
    """Normalise a frozen dataclass's values by their declared types (ints, floats, bools, tuples of ints), so
    equal settings hash equally; a value of the wrong kind raises ``TypeError`` naming ``label(field)``."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), label(f)
        if f.type in ("int", "int | None") and value is not None:
            value = _integer(value, name)
        elif f.type == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {value!r}")
            value = float(value)
        elif f.type == "bool":
            value = bool(value)
        elif f.type == "tuple":
            value = tuple(_integer(v, name) for v in (value if isinstance(value, Iterable) else (value,)))
        else:
            continue
        object.__setattr__(obj, f.name, value)


class ProbeGroup:
    """What every probe group has: its settings' flat names, their checks, and whether it runs."""

    def __post_init__(self):
        coerce_fields(self, self.label)
        self.check()

    def label(self, f) -> str:
        """How messages name a setting: ``FinalMeasurement.batches (measure_batches)``."""
        name = f if isinstance(f, str) else f.name
        flat = flat_name(next(g for g in dataclasses.fields(self) if g.name == name))
        return f"{type(self).__name__}.{name}" + (f" ({flat})" if flat != name else "")

    def check(self) -> None:
        """Raise ``ValueError`` naming the setting that is out of range."""

    def _positive(self, *names, minimum=1):
        for name in names:
            if getattr(self, name) < minimum:
                what = "positive" if minimum == 1 else f">= {minimum}"
                raise ValueError(f"{self.label(name)} must be {what}, got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        """Whether the probe runs."""
        return True

    def encoder_only(self) -> list[str]:
        """The flat names of the settings in use that only the encoder model supports."""
        return []

    def flat(self) -> dict:
        return {flat_name(f): getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class ProbeSettings(ProbeGroup):
    """What the probes of a run share: the sharpness noise ``sharpness_sigma`` and the seed of the final and
    training-set sharpness draws (the dynamics draw with the run's seed, as the official code), the LayerNorm
    blowup definition, and the spectrum's Monte-Carlo inputs beyond n=20."""

    sharpness_sigma: float = 0.02
    sharpness_seed: int = 0
    blowup_definition: str = "official"
    spectrum_samples: int = 1024

    def check(self):
        if not (math.isfinite(self.sharpness_sigma) and self.sharpness_sigma >= 0):
            raise ValueError(f"{self.label('sharpness_sigma')} must be finite and >= 0, got {self.sharpness_sigma}")
        if self.blowup_definition not in BLOWUP_DEFINITIONS:
            raise ValueError(f"{self.label('blowup_definition')} must be 'official' or 'theory', "
                             f"got {self.blowup_definition!r}")
        self._positive("spectrum_samples")


@dataclass(frozen=True)
class FinalMeasurement(ProbeGroup):
    """The final measurement on ``batches`` fresh batches: loss, sharpness (``sharpness_repeats`` noise draws, the
    same for every batch and every run, as the official code), LayerNorm blowup and parameter norm; ``spectrum``
    adds the model function's Fourier weight per degree and average sensitivity (the encoder model)."""

    enabled: bool = _flat(True, "measure")
    batches: int = _flat(1000, "measure_batches")
    sharpness_repeats: int = 10
    spectrum: bool = _flat(False, "final_spectrum")

    def check(self):
        self._positive("batches", "sharpness_repeats")

    @property
    def active(self):
        return self.enabled

    @property
    def metrics(self) -> tuple:
        """The metrics (``sensiformer.metrics``) it records, in order."""
        return ("loss", "sharpness", "blowup", "param_norm") + (("spectrum",) if self.spectrum else ())

    def encoder_only(self):
        return ["final_spectrum"] if self.spectrum else []


@dataclass(frozen=True)
class Dynamics(ProbeGroup):
    """Probes every ``every`` steps of training (0: never) on ``batches`` fixed batches with ``repeats`` noise
    draws (common random numbers over training); ``spectrum`` adds the model function's Fourier weight per degree
    and average sensitivity to those rows (the encoder model)."""

    every: int = _flat(0, "dynamic_every")
    batches: int = _flat(1, "dynamic_batches")
    repeats: int = _flat(500, "dynamic_repeats")
    spectrum: bool = _flat(False, "dynamic_spectrum")

    def check(self):
        self._positive("every", minimum=0)
        self._positive("batches", "repeats")

    @property
    def active(self):
        return self.every > 0

    def encoder_only(self):
        return ["dynamic_spectrum"] if self.spectrum else []


class Extra(ProbeGroup):
    """A probe some experiments add after the final measurement (``RunConfig.extras``). Every extra is the
    encoder model's only; its first setting is its switch, the name a refusal reports."""

    def encoder_only(self):
        return [flat_name(dataclasses.fields(self)[0])] if self.active else []


@dataclass(frozen=True)
class TrainSharpness(Extra):
    """Sharpness (``repeats`` noise draws; 0: not measured) on one batch holding a whole input subset:
    ``restricted_subset(n, subset, subset_seed)`` if ``subset`` is given (generalization: the parent run's training
    set), else the run's training subset."""

    repeats: int = _flat(0, "train_sharpness_repeats")
    subset: int | None = _flat(None, "sharpness_subset")
    subset_seed: int | None = _flat(None, "sharpness_subset_seed")

    def check(self):
        self._positive("repeats", minimum=0)
        if self.subset is not None:
            self._positive("subset")

    @property
    def active(self):
        return self.repeats > 0


@dataclass(frozen=True)
class Predictions(Extra):
    """The thresholded predictions on all 2^n inputs, stored as an artifact (hex)."""

    save: bool = _flat(False, "save_predictions")

    @property
    def active(self):
        return self.save


@dataclass(frozen=True)
class ModelSensitivity(Extra):
    """The exact average sensitivity and sensitivity profile of the Boolean function ``out > threshold`` the
    final model computes on {0,1}^n (n <= 26)."""

    enabled: bool = _flat(False, "model_sensitivity")
    threshold: float = _flat(0.5, "sensitivity_threshold")

    @property
    def active(self):
        return self.enabled


@dataclass(frozen=True)
class LengthEvaluation(Extra):
    """The evaluation repeated at each of ``lengths`` (length generalisation; the model gets positions for the
    longest)."""

    lengths: tuple = _flat((), "eval_lengths")

    @property
    def active(self):
        return bool(self.lengths)
