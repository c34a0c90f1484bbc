"""Boolean target functions on {0,1}^n, evaluated in C (the same code the training loop uses).

Bit order follows the official code: x_1 (column 0) is the most significant bit of the
truth-table index, ``idx(x) = sum_j x_j 2^(n-1-j)``. Positions (``bits``) are 0-based columns.

Output scales
-------------
Targets return values on the paper's {0,1} scale (real-valued targets such as ``Mean`` or a
real ``FourierFunction`` return reals on that scale). ``to_pm1`` and ``to_01`` convert between
it and the +-1 scale of Boolean Fourier analysis, ``f = 1 - 2y`` (O'Donnell's convention:
0 -> +1, 1 -> -1; the official code's ``2y - 1`` is its negation, with the same squared
Fourier coefficients), and ``binarize`` turns real outputs into {0,1} labels.

Label noise
-----------
Every target takes ``noise=p``. The C training loop then flips each label ``y -> 1 - y`` with
probability p, drawn from a counter-based stream keyed by (seed, step, row), so a run is
reproducible for any thread count. Calling a target stays noiseless; ``target.noisy(x, seed,
step)`` gives the labels that the training stream attaches to the rows ``x`` of batch ``step``.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping

import numpy as np

from . import _native
from ._validation import (MAX_TABLE_N, as_tokens, as_truth_table, check_choice, check_count, check_float,
                          check_int, check_memory, check_seed)
from ._vocabulary import TARGET_KINDS

_PARITY, _MAJORITY, _FIRST, _MEAN, _TABLE, _SPARSE_PARITY, _JUNTA, _FOURIER = (
    TARGET_KINDS[k] for k in ("parity", "majority", "first", "mean", "table", "sparse_parity", "junta", "fourier"))
CALLABLE_TABLE_MAX_N = 24  #: largest n at which a ``Callable`` is tabulated for the C loop
_TABLE_CHUNK = 1 << 16  # rows per evaluation when tabulating
SCALES = ("01", "pm1")


# ---- output scales ---------------------------------------------------------------------------

def to_pm1(y) -> np.ndarray:
    """{0,1} scale -> +-1 scale: ``1 - 2y`` (0 -> +1, 1 -> -1; reals map affinely)."""
    return 1.0 - 2.0 * np.asarray(y, dtype=np.float64)


def to_01(f) -> np.ndarray:
    """+-1 scale -> {0,1} scale: ``(1 - f) / 2``, the inverse of ``to_pm1``."""
    return 0.5 * (1.0 - np.asarray(f, dtype=np.float64))


def binarize(y, *, threshold=0.5) -> np.ndarray:
    """Real outputs -> {0,1} labels: 1.0 where ``y > threshold`` (the accuracy rule of training)."""
    return (np.asarray(y, dtype=np.float64) > check_float(threshold, "threshold")).astype(np.float64)


def _on_scale(y, scale):
    return y if check_choice(scale, "scale", SCALES) == "01" else to_pm1(y)


class Target:
    """A function of n input bits with values on the {0,1} scale (MEAN: in [0, 1]).

    Call it on a (batch, n) array of 0/1 tokens to get float64 values (``scale="pm1"``: the
    +-1 form ``1 - 2y``). ``noise=p`` flips training labels with probability p (see the
    module docstring); the call itself is always noiseless.
    """

    _kind: int = -1
    boolean = True  #: values are in {0, 1}
    sequence = False  #: one label per position (``Prefix``) instead of one per input

    def __init__(self, n, *, noise=0.0):
        self.n = check_int(n, "n", 1, 4096)
        self.noise = check_float(noise, "noise", 0.0, 1.0)

    def _table(self):
        return None

    def _options(self) -> dict:
        """Engine options of the kind (csrc/py_boolean.c reads them); noise is added by engine_spec."""
        return {}

    def engine_spec(self):
        """``(kind, n, table[, options])``: how the C training loop evaluates this target."""
        spec = (self._kind, self.n, self._table())
        options = self._options()
        if self.noise:
            options["noise"] = self.noise
        return spec + (options,) if options else spec

    def _inputs(self, x):
        x = as_tokens(x, "x")
        if x.shape[1] != self.n:
            raise ValueError(f"x has length {x.shape[1]}, but {self!r} is defined on n={self.n} bits")
        return x

    def __call__(self, x, scale="01") -> np.ndarray:
        return _on_scale(_native.target_eval(target=self.engine_spec(), x=self._inputs(x)), scale)

    def noisy(self, x, *, seed=0, step=0) -> np.ndarray:
        """Labels of ``x`` with the training stream's label noise ({0,1} scale).

        Row b is flipped exactly when the C loop flips row b of batch ``step`` in a run with
        ``seed``, so ``noisy(x_batch, seed, step)`` reproduces that batch's labels.
        """
        y = self(x)
        flips = _native.label_noise(seed=check_seed(seed), step=check_count(step, "step"), rows=y.shape[0], p=self.noise)
        return np.where(flips.astype(bool), 1.0 - y, y)

    def truth_table(self, *, scale="01") -> np.ndarray:
        """All 2^n values in truth-table order (n <= 26), evaluated in chunks."""
        if self.n > MAX_TABLE_N:
            raise ValueError(f"a truth table needs n <= {MAX_TABLE_N}, but {self!r} has n={self.n}; "
                             "use sensiformer.analysis.estimate_sensitivity for Monte-Carlo analysis")
        check_memory(2**self.n * 8, f"the truth table of {self!r}")
        table = np.empty(2**self.n)
        for start in range(0, table.size, _TABLE_CHUNK):
            stop = min(start + _TABLE_CHUNK, table.size)
            table[start:stop] = self(inputs_from_indices(np.arange(start, stop), self.n))
        return _on_scale(table, scale)

    def _repr_args(self) -> str:
        return f"n={self.n}"

    def __repr__(self):
        noise = f", noise={self.noise}" if self.noise else ""
        return f"{type(self).__name__}({self._repr_args()}{noise})"

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


class _TableTarget(Target):
    """A target given by its full truth table (``self.table``, 2^n float64 values)."""

    _kind = _TABLE

    def _table(self):
        return self.table

    def truth_table(self, scale="01") -> np.ndarray:
        return _on_scale(self.table.copy(), scale)


class RandomFunction(_TableTarget):
    """A uniformly random Boolean function, tabulated as the official code does.

    The truth table is exactly ``numpy.random.default_rng(seed).choice(2, size=2**n)``,
    indexed with x_1 as the most significant bit.
    """

    def __init__(self, n, *, seed=0, noise=0.0):
        super().__init__(check_int(n, "n", 1, 30), noise=noise)
        self.seed = check_seed(seed)
        check_memory(2**self.n * 16, f"RandomFunction(n={self.n})'s truth table")  # int64 draws, then float64
        self.table = np.random.default_rng(self.seed).choice(2, size=2**self.n).astype(np.float64)

    def _repr_args(self):
        return f"n={self.n}, seed={self.seed}"


class TruthTable(_TableTarget):
    """The function with the given truth table: 2^n real values, x_1 the most significant bit.

    ``boolean`` is True when every value is 0 or 1.
    """

    def __init__(self, table, *, noise=0.0):
        table, n = as_truth_table(table, "table")
        super().__init__(n, noise=noise)
        self.table = table.copy()  # ours: later edits of the caller's array change nothing
        self.boolean = bool(np.all((self.table == 0) | (self.table == 1)))

    def _repr_args(self):
        return f"n={self.n}, boolean={self.boolean}"


def _key_positions(key):
    """A key of a coefficient mapping: one position or a tuple/list/set of them."""
    def is_position(p):
        return isinstance(p, numbers.Integral) and not isinstance(p, (bool, np.bool_))

    if is_position(key):
        return (key,)
    if isinstance(key, (tuple, list, set, frozenset)) and all(map(is_position, key)):
        return tuple(key)
    raise TypeError(f"coefficients keys must be a position or a set of positions (a tuple of ints), got {key!r}")


def _positions(bits, n, name="bits"):
    """Distinct 0-based positions in [0, n) as int32, in the given order."""
    arr = np.asarray(bits)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of positions, got {bits!r}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer positions, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{name} must lie in [0, {n}) (0-based columns), got {arr.tolist()}")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} must be distinct, got {arr.tolist()}")
    return arr.astype(np.int32)


class SparseParity(Target):
    """Parity of the bits at the given positions: ``sum(x[:, bits]) mod 2``.

    Parameters
    ----------
    n : int
        Input length.
    bits : sequence of int
        Distinct 0-based positions (column 0 is x_1); stored sorted. Average sensitivity
        ``len(bits)``, Fourier weight 1 on the set ``bits``.
    noise : float
        Label-flip probability of the training stream.
    """

    _kind = _SPARSE_PARITY

    def __init__(self, n, bits, *, noise=0.0):
        super().__init__(n, noise=noise)
        self.bits = np.sort(_positions(bits, self.n))

    def _options(self):
        return {"bits": self.bits}

    def _repr_args(self):
        return f"n={self.n}, bits={self.bits.tolist()}"


class Junta(Target):
    """A k-junta: a function of only k of the n bits, given by a table on those bits.

    Parameters
    ----------
    n : int
        Input length.
    k : int, optional
        Number of relevant bits, chosen uniformly at random with ``seed`` (sorted).
    bits : sequence of int, optional
        The relevant positions instead of ``k``; ``bits[0]`` is the most significant bit of
        the table index.
    table : array-like, optional
        The 2^k values on the relevant bits; default a uniformly random Boolean table drawn
        with ``seed``. Real values are allowed (then ``boolean`` is False).
    seed : int
    noise : float
        Label-flip probability of the training stream.
    """

    _kind = _JUNTA

    def __init__(self, n, *, k=None, bits=None, table=None, seed=0, noise=0.0):
        super().__init__(n, noise=noise)
        self.seed = check_seed(seed)
        rng = np.random.default_rng(self.seed)
        if (k is None) == (bits is None):
            raise ValueError("give exactly one of k (random relevant bits) and bits (the relevant positions)")
        if bits is None:
            k = check_int(k, "k", 1, min(self.n, MAX_TABLE_N))
            bits = np.sort(rng.choice(self.n, size=k, replace=False))
        self.bits = _positions(bits, self.n)
        if self.bits.size > MAX_TABLE_N:
            raise ValueError(f"a junta reads at most {MAX_TABLE_N} bits, got {self.bits.size}")
        if table is None:
            self.table = rng.integers(0, 2, size=2**self.bits.size).astype(np.float64)
        else:
            self.table, k_table = as_truth_table(table, "table")
            if k_table != self.bits.size:
                raise ValueError(f"table must have 2**{self.bits.size} entries (one per setting of the "
                                 f"{self.bits.size} relevant bits), got {self.table.size}")
            self.table = self.table.copy()
        self.boolean = bool(np.all((self.table == 0) | (self.table == 1)))

    @property
    def k(self) -> int:
        return int(self.bits.size)

    def _options(self):
        return {"bits": self.bits, "table": self.table}

    def _repr_args(self):
        return f"n={self.n}, bits={self.bits.tolist()}, seed={self.seed}"


class FourierFunction(Target):
    """The function ``g(x) = sum_S c_S chi_S(x)`` given by Fourier coefficients.

    ``chi_S(x) = (-1)^(sum_{i in S} x_i)`` on {0,1} inputs. The target's value is on the {0,1}
    scale: ``(1 - g) / 2`` for ``output="real"`` (so that ``to_pm1`` of it is g and
    ``analysis.fourier`` of its truth table gives back c), or for ``output="sign"`` the Boolean
    ``1 where g(x) < 0 else 0`` (sign g, with sign 0 = +1).

    Parameters
    ----------
    coefficients : array-like or mapping
        Either the dense 2^n vector indexed like a truth table (set S <-> index with bit
        n-1-j set for each position j in S), or a mapping ``{positions: c}`` with 0-based
        position tuples (``()`` is the constant term); then ``n`` is required.
    n : int, optional
        Input length (inferred from a dense vector).
    output : {"real", "sign"}
    noise : float
        Label-flip probability of the training stream.

    Notes
    -----
    The C loop evaluates the sum term by term (O(total set size) per input); ``truth_table``
    uses the fast transform instead, so for ``output="real"`` the two agree to rounding (and
    exactly for dyadic coefficients). For ``output="sign"`` they agree exactly: where g is within
    rounding of 0, ``truth_table`` takes the term-by-term sum's sign.
    """

    _kind = _FOURIER

    def __init__(self, coefficients, *, n=None, output="real", noise=0.0):
        output = check_choice(output, "output", ("real", "sign"))
        if isinstance(coefficients, Mapping):
            if n is None:
                raise ValueError("n is required when coefficients is a mapping {positions: coefficient}")
            super().__init__(n, noise=noise)
            sets, values = self._from_mapping(coefficients)
        else:
            dense, n_dense = as_truth_table(coefficients, "coefficients")
            if n is not None and check_int(n, "n", 1) != n_dense:
                raise ValueError(f"coefficients has 2**{n_dense} entries but n={n}")
            super().__init__(n_dense, noise=noise)
            index = np.flatnonzero(dense)
            member = inputs_from_indices(index, self.n)  # (terms, n): is position j in the set?
            sets = [np.flatnonzero(row) for row in member]
            values = dense[index]
        self._set_terms(sets, values, output)

    def _set_terms(self, sets, values, output):
        """Store the terms as the engine reads them: positions back to back, set offsets, coefficients."""
        sizes = np.fromiter(map(len, sets), dtype=np.int64, count=len(sets))
        self.set_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.bits = np.fromiter(itertools.chain.from_iterable(sets), dtype=np.int32, count=int(sizes.sum()))
        self.coefficients = np.ascontiguousarray(values, dtype=np.float64)
        self.output = output
        self.boolean = output == "sign"

    def _from_mapping(self, coefficients):
        sets, values, seen = [], [], set()
        for key, value in coefficients.items():
            positions = _key_positions(key)
            S = np.sort(_positions(positions, self.n, "a set of positions")) if positions else np.zeros(0, np.int32)
            if tuple(S) in seen:
                raise ValueError(f"the set {sorted(positions)} appears twice in coefficients")
            seen.add(tuple(S))
            sets.append(S)
            values.append(check_float(value, f"the coefficient of {sorted(positions)}"))
        return sets, values

    @property
    def degree(self) -> int:
        """Largest |S| with a nonzero coefficient (of g; sign g can have a higher degree)."""
        sizes = np.diff(self.set_offsets)[self.coefficients != 0]
        return int(sizes.max()) if sizes.size else 0

    def dense_coefficients(self) -> np.ndarray:
        """The 2^n coefficients of g indexed like a truth table (n <= 26)."""
        if self.n > MAX_TABLE_N:
            raise ValueError(f"dense coefficients need n <= {MAX_TABLE_N}, got n={self.n}")
        term = np.repeat(np.arange(self.coefficients.size), np.diff(self.set_offsets))
        index = np.bincount(term, weights=2.0 ** (self.n - 1 - self.bits.astype(np.int64)),
                            minlength=self.coefficients.size).astype(np.int64)
        dense = np.zeros(2**self.n)
        dense[index] = self.coefficients
        return dense

    def truth_table(self, *, scale="01") -> np.ndarray:
        g = self.dense_coefficients()
        _native.fwht(a=g, n_threads=0)  # g(x) = sum_S c_S chi_S(x): the unnormalised transform
        if self.output == "real":
            return _on_scale(to_01(g), scale)
        y = (g < 0).astype(np.float64)
        # Where g is so close to 0 that rounding could decide its sign, the transform's sum and the training
        # stream's term-by-term sum may disagree: there, take the stream's own labels. Elsewhere both sums are
        # within (n + terms) eps sum|c| of the exact g, so they agree with it on the sign.
        bound = 2 * (self.n + self.coefficients.size + 2) * np.finfo(np.float64).eps * np.abs(self.coefficients).sum()
        near = np.flatnonzero(np.abs(g) <= bound)
        if near.size:
            y[near] = self(inputs_from_indices(near, self.n))
        return _on_scale(y, scale)

    def _options(self):
        return {"bits": self.bits, "set_offsets": self.set_offsets, "coefficients": self.coefficients,
                "sign_output": self.output == "sign"}

    def _repr_args(self):
        return f"n={self.n}, terms={self.coefficients.size}, degree={self.degree}, output={self.output!r}"


class RandomDegree(FourierFunction):
    """A random function of Fourier degree <= k.

    Every set S with |S| <= k (the empty set included) gets an independent coefficient
    ``N(0, 1/m)``, m the number of such sets, so that ``E[g^2] = 1`` in expectation. The
    value is ``sign g`` on the {0,1} scale (``output="sign"``, Boolean) or ``(1 - g)/2``
    (``output="real"``), as in ``FourierFunction``.

    Parameters
    ----------
    n : int
    k : int
        Largest set size (the degree of g with probability 1).
    seed : int
    output : {"sign", "real"}
    noise : float
        Label-flip probability of the training stream.
    """

    MAX_TERMS = 1 << 20

    def __init__(self, n, k, *, seed=0, output="sign", noise=0.0):
        n = check_int(n, "n", 1, 4096)
        k = check_int(k, "k", 0, n)
        m = sum(math.comb(n, j) for j in range(k + 1))
        if m > self.MAX_TERMS:
            raise ValueError(f"n={n}, k={k} gives {m} Fourier terms, more than {self.MAX_TERMS}; lower k")
        output = check_choice(output, "output", ("sign", "real"))
        Target.__init__(self, n, noise=noise)
        self.seed = check_seed(seed)
        self.k = k
        values = np.random.default_rng(self.seed).normal(scale=1 / np.sqrt(m), size=m)
        sets = list(itertools.chain.from_iterable(itertools.combinations(range(n), j) for j in range(k + 1)))
        self._set_terms(sets, values, output)  # sorted, distinct sets by construction: no checks needed

    def _repr_args(self):
        return f"n={self.n}, k={self.k}, seed={self.seed}, output={self.output!r}"


class Callable(Target):
    """Any vectorised Python function of the bits: ``fn(x)`` maps a (batch, n) uint8 array of
    0/1 tokens to ``batch`` real values on the {0,1} scale.

    Calling the target calls ``fn`` (its output is checked). For the C training loop the
    function is tabulated once, in chunks, into a truth table when ``n <= 24``. For larger n
    the C loop cannot use it: ``engine_spec()`` raises NotImplementedError (the loop would
    need a per-batch Python callback, which it does not have); train on a fixed dataset
    ``Trainer(model, data=(x, target(x)))`` instead.

    Parameters
    ----------
    fn : callable
    n : int
    noise : float
        Label-flip probability of the training stream.
    """

    _kind = _TABLE

    def __init__(self, fn, n, *, noise=0.0):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        super().__init__(n, noise=noise)
        self.fn = fn
        self._cache = None

    def __call__(self, x, scale="01") -> np.ndarray:
        x = self._inputs(x)
        y = np.asarray(self.fn(x))
        if y.dtype == object or y.dtype.kind not in "biuf":
            raise TypeError(f"fn must return real numbers, got dtype {y.dtype}")
        if y.shape not in ((x.shape[0],), (x.shape[0], 1)):
            raise ValueError(f"fn must return one value per row, shape ({x.shape[0]},); got {y.shape}")
        y = y.reshape(-1).astype(np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError("fn returned NaN or inf")
        return _on_scale(y, scale)

    def _table(self):
        if self.n > CALLABLE_TABLE_MAX_N:
            raise NotImplementedError(
                f"Callable(n={self.n}): the C training loop can use a Python function only as a truth table, "
                f"tabulated for n <= {CALLABLE_TABLE_MAX_N}. Train on a fixed dataset instead: "
                "Trainer(model, data=(x, target(x))).")
        if self._cache is None:
            self._cache = Target.truth_table(self)
        return self._cache

    @property
    def boolean(self) -> bool | None:
        """Whether fn is {0,1}-valued, from its table (n <= 24; None beyond: not tabulated)."""
        if self.n > CALLABLE_TABLE_MAX_N:
            return None
        table = self._table()
        return bool(np.all((table == 0) | (table == 1)))

    def truth_table(self, *, scale="01") -> np.ndarray:
        table = self._table().copy() if self.n <= CALLABLE_TABLE_MAX_N else Target.truth_table(self)
        return _on_scale(table, scale)

    def _repr_args(self):
        return f"{getattr(self.fn, '__name__', repr(self.fn))}, n={self.n}"

    def __eq__(self, other):
        return type(other) is Callable and (self.fn, self.n, self.noise) == (other.fn, other.n, other.noise)

    def __hash__(self):
        return hash(("Callable", self.n))


class Prefix(Target):
    """The label sequence of a target on every prefix, ``y_t = f(x_1..x_t)`` for t = 1..n: the
    supervision of the scratchpad (``Seq2SeqTransformer``), which writes y_1..y_n token by token.

    Defined for the targets that exist at every length: ``Parity`` (prefix parities, the paper's
    scratchpad), ``Majority``, ``First`` and ``Mean``. Calling it gives (batch, n) labels (the last
    column is the target itself); the C training loop computes them the same way. Label noise
    (the base target's) flips each (row, position) label independently.
    """

    sequence = True

    def __init__(self, target):
        if type(target) not in (Parity, Majority, First, Mean):
            raise TypeError(f"prefix labels exist for Parity, Majority, First and Mean, not {target!r}")
        super().__init__(target.n, noise=target.noise)
        self.base = target
        self._kind = target._kind
        self.boolean = target.boolean

    def _options(self):
        return {"prefix": True}

    def noisy(self, x, *, seed=0, step=0) -> np.ndarray:
        """Labels (batch, n) of ``x`` with the training stream's label noise ({0,1} scale)."""
        y = self(x)
        flips = _native.label_noise(seed=check_seed(seed), step=check_count(step, "step"), rows=y.size, p=self.noise)
        return np.where(flips.reshape(y.shape).astype(bool), 1.0 - y, y)

    def truth_table(self, *, scale="01") -> np.ndarray:
        raise TypeError(f"{self!r} has a label per position, not a truth table; see {self.base!r}.truth_table()")

    def _repr_args(self):
        return repr(self.base)

    def __repr__(self):
        return f"{type(self).__name__}({self._repr_args()})"

    def __eq__(self, other):
        return type(self) is type(other) and self.base == other.base

    def __hash__(self):
        return hash((type(self).__name__, hash(self.base)))


class PrefixParity(Prefix):
    """Prefix parities ``y_t = x_1 xor ... xor x_t`` (t = 1..n): the paper's scratchpad target;
    ``y_n`` is PARITY."""

    def __init__(self, n, *, noise=0.0):
        super().__init__(Parity(n, noise=noise))

    def _repr_args(self):
        noise = f", noise={self.noise}" if self.noise else ""
        return f"n={self.n}{noise}"


def restricted_subset(n, m, *, seed=0) -> np.ndarray:
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
