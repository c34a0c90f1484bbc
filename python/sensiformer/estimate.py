"""The one result type of every stochastic estimate in sensiformer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate with its standard error.

    Attributes
    ----------
    value : float
        The estimate (usually a sample mean).
    stderr : float
        Standard error of ``value``.
    n_samples : int
        Number of independent samples behind it.
    samples : numpy.ndarray or None
        The per-sample values, where keeping them is cheap.
    """

    value: float
    stderr: float
    n_samples: int
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_samples(cls, samples) -> "Estimate":
        """Mean and standard error (sample std / sqrt(n)) of independent draws."""
        s = np.asarray(samples, dtype=np.float64).reshape(-1)
        if s.size == 0:
            raise ValueError("samples must not be empty")
        stderr = float(s.std(ddof=1) / np.sqrt(s.size)) if s.size > 1 else float("nan")
        return cls(float(s.mean()), stderr, int(s.size), s)

    def interval(self, *, z: float = 1.96) -> tuple[float, float]:
        """A normal-approximation confidence interval (default 95%)."""
        return (self.value - z * self.stderr, self.value + z * self.stderr)

    def __float__(self) -> float:
        return self.value

    def __format__(self, spec: str) -> str:
        spec = spec or ".4g"
        return f"{self.value:{spec}} ± {self.stderr:{spec}}"
