"""Boolean target functions on {0,1}^n, evaluated in C (the same code the training loop uses).

Bit order follows the official code: x_1 (column 0) is the most significant bit of the
truth-table index, ``idx(x) = sum_j x_j 2^(n-1-j)``.
"""

from __future__ import annotations

import numpy as np

from . import _engine
from ._validation import as_tokens, check_int, check_seed

# sf_target_kind in csrc/sf.h
_PARITY, _MAJORITY, _FIRST, _MEAN, _TABLE = range(5)


class Target:
    """A function of n input bits with values on the {0,1} scale (MEAN: in [0, 1]).

    Call it on a (batch, n) array of 0/1 tokens to get float64 values.
    """

    _kind: int = -1
    boolean = True  #: values are in {0, 1}

    def __init__(self, n):
        self.n = check_int(n, "n", 1, 4096)

    def _table(self):
        return None

    def engine_spec(self):
        """``(kind, n, table)``: how the C training loop evaluates this target."""
        return (self._kind, self.n, self._table())

    def __call__(self, x) -> np.ndarray:
        x = as_tokens(x, "x")
        if x.shape[1] != self.n:
            raise ValueError(f"x has length {x.shape[1]}, but {self!r} is defined on n={self.n} bits")
        return _engine.target_eval(self.engine_spec(), x)

    def __repr__(self):
        return f"{type(self).__name__}(n={self.n})"

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__.keys() == other.__dict__.keys() and all(
            np.array_equal(v, other.__dict__[k]) for k, v in self.__dict__.items())

    def __hash__(self):
        return hash((type(self).__name__, self.n))


class Parity(Target):
    """PARITY: ``sum(x) mod 2`` (average sensitivity n)."""

    _kind = _PARITY


class Majority(Target):
    """MAJORITY: 1 if more ones than zeros, else 0 (a tie at even n gives 0, as the paper)."""

    _kind = _MAJORITY


class First(Target):
    """FIRST: the first bit x_1."""

    _kind = _FIRST


class Mean(Target):
    """MEAN: the fraction of ones, a real value in [0, 1]."""

    _kind = _MEAN
    boolean = False


class RandomFunction(Target):
    """A uniformly random Boolean function, tabulated as the official code does.

    The truth table is exactly ``numpy.random.default_rng(seed).choice(2, size=2**n)``,
    indexed with x_1 as the most significant bit.
    """

    _kind = _TABLE

    def __init__(self, n, seed=0):
        super().__init__(check_int(n, "n", 1, 30))
        self.seed = check_seed(seed)
        self.table = np.random.default_rng(self.seed).choice(2, size=2**self.n).astype(np.float64)

    def _table(self):
        return self.table

    def __repr__(self):
        return f"RandomFunction(n={self.n}, seed={self.seed})"


def restricted_subset(n, m, seed=0) -> np.ndarray:
    """The official ``RestrictedSampler`` training set: m distinct input indices of {0,1}^n.

    Equals ``numpy.random.default_rng(seed).choice(2**n, m, replace=False)``.
    """
    n = check_int(n, "n", 1, 62)
    m = check_int(m, "m", 1, 2**n)
    return np.random.default_rng(check_seed(seed)).choice(2**n, m, replace=False).astype(np.int64)


def inputs_from_indices(indices, n) -> np.ndarray:
    """The (len(indices), n) 0/1 inputs whose truth-table indices are given (x_1 = MSB)."""
    idx = np.asarray(indices, dtype=np.int64)
    shifts = np.arange(n - 1, -1, -1, dtype=np.int64)
    return ((idx[:, None] >> shifts) & 1).astype(np.uint8)


def all_inputs(n) -> np.ndarray:
    """Every input of {0,1}^n in truth-table order (2^n rows)."""
    n = check_int(n, "n", 1, 26)
    return inputs_from_indices(np.arange(2**n, dtype=np.int64), n)
