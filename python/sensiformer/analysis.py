"""Exact Boolean Fourier and sensitivity analysis, for target functions and trained models.

Conventions
-----------
* A truth table holds the 2^n values of a function on {0,1}^n in index order, x_1 the most
  significant bit: ``idx(x) = sum_j x_j 2^(n-1-j)`` (as the official code).
* Characters are ``chi_S(x) = (-1)^(sum_{i in S} x_i)`` on {0,1} inputs, and sets S are
  indexed like the truth table: position j (0-based, x_{j+1}) is in S when bit n-1-j of the
  index is set. Coefficients are ``f^(S) = E_x[f(x) chi_S(x)]``.
* ``scale`` says how to read the values. ``"01"`` (default): the paper's {0,1} scale (Boolean
  labels, or reals such as MEAN); the function analysed is ``g = 1 - 2f`` (O'Donnell's +-1
  convention; the official code's ``2f - 1`` has the same squared coefficients). ``"pm1"``:
  the values are analysed as they are (+-1 or real).
* Sensitivities are always the paper's +-1-scale quantities: ``average_sensitivity`` is
  ``as_n = sum_S |S| g^(S)^2``, i.e. ``sum_i E_x[(f(x) - f(x xor e_i))^2]`` on the "01" scale
  and the same divided by 4 on "pm1", so PARITY gives n and MEAN gives 1/n either way.
  ``influences``, ``sensitivity`` (per input) and ``noise_sensitivity`` follow the same rule.

The exact functions enumerate all 2^n inputs in C (OpenMP, float64, bitwise identical for any
``n_threads``) and accept n <= 26. Beyond that, ``estimate_sensitivity`` and
``model_sensitivity(exact=False)`` give Monte-Carlo estimates with calibrated standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import _native
from ._config import tqdm_env_disabled
from ._validation import (MAX_TABLE_N, as_truth_table, check_bool, check_boolean_table, check_choice, check_float,
                          check_int, check_memory, check_seed, resolve_threads)
from .estimate import Estimate
from .model import FORWARD_TOKENS, Transformer
from .targets import SCALES, Callable, Target, binarize, inputs_from_indices, to_01, to_pm1

if TYPE_CHECKING:
    from ._typing import AnalysedFunction, ArrayLike

__all__ = [
    "MAX_EXACT_N", "SensitivityEstimate", "average_sensitivity", "binarize", "degree", "degree_spectrum",
    "estimate_sensitivity", "fourier", "fwht", "influences", "inverse_fourier", "max_sensitivity",
    "model_sensitivity", "noise_sensitivity", "noise_stability", "sensitivity", "sensitivity_profile",
    "to_01", "to_pm1", "truth_table",
]  # binarize, to_01 and to_pm1 come from sensiformer.targets (the output scales of both modules)

MAX_EXACT_N = MAX_TABLE_N  #: largest n the exact functions enumerate (2^26 inputs)
DEFAULT_SAMPLES = 2000  #: Monte-Carlo inputs when ``samples`` is not given
_CHUNK_TOKENS_CHEAP = 1 << 20  # tokens per call of a target or callable
_SAMPLE_BLOCK = 1024  # Monte-Carlo inputs are drawn in fixed blocks, independent of chunking
_AUTO_PROGRESS_INPUTS = 1 << 16  # progress=None shows a bar from this many inputs (n=20: ~20 s)


# ---- truth tables ------------------------------------------------------------------------------

def _table(truth_table, scale, boolean=False):
    check_choice(scale, "scale", SCALES)
    table, n = as_truth_table(truth_table, "truth_table")
    if boolean:
        check_boolean_table(table, "truth_table", scale)
    return table, n


def _flip_factor(scale):
    """Raw squared flip differences -> the +-1-scale quantity."""
    return 1.0 if scale == "01" else 0.25


def fwht(a: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
    """In-place unnormalised Walsh-Hadamard transform ``a[S] <- sum_x a[x] (-1)^|S & x|``.

    Parameters
    ----------
    a : numpy.ndarray
        float64, 1-D, C-contiguous and writeable, 2^n finite entries (n <= 26).
    n_threads : int, optional

    Returns
    -------
    numpy.ndarray
        ``a`` itself. Applying the transform twice multiplies by 2^n.
    """
    if not isinstance(a, np.ndarray) or a.dtype != np.float64:
        raise TypeError(f"a must be a float64 NumPy array (the transform is in place), got {type(a).__name__}"
                        + (f" of dtype {a.dtype}" if isinstance(a, np.ndarray) else ""))
    if not (a.flags.c_contiguous and a.flags.writeable):
        raise ValueError("a must be C-contiguous and writeable (the transform is in place)")
    work, _ = as_truth_table(a, "a")  # shape and finiteness; an aligned copy only if a is unaligned
    _native.fwht(a=work, n_threads=resolve_threads(n_threads))
    if work is not a:
        a[...] = work
    return a


def fourier(truth_table: ArrayLike, *, scale: str = "01", n_threads: int | None = None) -> np.ndarray:
    """All 2^n Fourier coefficients, indexed like the truth table.

    Parameters
    ----------
    truth_table : array-like
        2^n finite real values (n <= 26).
    scale : {"01", "pm1"}
        "01": the coefficients of ``1 - 2f``; "pm1": of f itself.
    n_threads : int, optional

    Returns
    -------
    numpy.ndarray
        ``c[S] = E_x[g(x) chi_S(x)]``; ``sum(c**2) == E[g^2]`` (Parseval).
    """
    table, _ = _table(truth_table, scale)
    return _native.fourier(truth_table=table, map01=scale == "01", n_threads=resolve_threads(n_threads))


def inverse_fourier(coefficients: ArrayLike, *, scale: str = "01", n_threads: int | None = None) -> np.ndarray:
    """The truth table ``g(x) = sum_S c[S] chi_S(x)`` of dense coefficients (the inverse of
    ``fourier``): on the "01" scale the values are ``(1 - g) / 2``."""
    check_choice(scale, "scale", SCALES)
    g, _ = as_truth_table(coefficients, "coefficients")
    g = g.copy()
    _native.fwht(a=g, n_threads=resolve_threads(n_threads))
    return to_01(g) if scale == "01" else g


def _spectrum(truth_table, scale, n_threads):
    table, n = _table(truth_table, scale)
    weights, maxabs = _native.spectrum(truth_table=table, map01=scale == "01", n_threads=resolve_threads(n_threads))
    return weights, maxabs, n


def degree_spectrum(truth_table: ArrayLike, *, scale: str = "01", n_threads: int | None = None) -> np.ndarray:
    """Fourier weight per degree, ``W[k] = sum_{|S| = k} g^(S)^2`` for k = 0..n.

    Sums to ``E[g^2]`` (1 for a Boolean function). See ``fourier`` for ``scale``.
    """
    return _spectrum(truth_table, scale, n_threads)[0]


def degree(truth_table: ArrayLike, *, scale: str = "01", tol: float = 1e-9, n_threads: int | None = None) -> int:
    """Fourier degree: the largest |S| with ``|g^(S)| > tol * ||g||_2`` (0 for g = 0).

    Boolean functions have coefficients that are multiples of 2^(1-n) and are transformed
    exactly, so the default ``tol`` is exact for them up to n = 26.
    """
    tol = check_float(tol, "tol", 0.0)
    weights, maxabs, _ = _spectrum(truth_table, scale, n_threads)
    above = np.flatnonzero(maxabs > tol * np.sqrt(weights.sum()))
    return int(above[-1]) if above.size else 0


def noise_stability(truth_table: ArrayLike, rho: float, *, scale: str = "01", n_threads: int | None = None) -> float:
    """``Stab_rho[g] = E[g(x) g(y)]`` for rho-correlated x, y: ``sum_k rho^k W[k]``, rho in [-1, 1]."""
    rho = check_float(rho, "rho", -1.0, 1.0)
    weights = degree_spectrum(truth_table, scale=scale, n_threads=n_threads)
    return float(np.sum(weights * rho ** np.arange(weights.size)))


def noise_sensitivity(truth_table: ArrayLike, delta: float, *, scale: str = "01", n_threads: int | None = None) -> float:
    """``NS_delta = E[(g(x) - g(y))^2] / 4`` where y flips each bit of x with probability delta.

    Equals ``(E[g^2] - Stab_{1-2 delta}[g]) / 2``; for a Boolean function, ``Pr[f(x) != f(y)]``.
    """
    delta = check_float(delta, "delta", 0.0, 1.0)
    weights = degree_spectrum(truth_table, scale=scale, n_threads=n_threads)
    stab = np.sum(weights * (1.0 - 2.0 * delta) ** np.arange(weights.size))
    return float(0.5 * (weights.sum() - stab))


def influences(truth_table: ArrayLike, *, scale: str = "01", n_threads: int | None = None) -> np.ndarray:
    """Per-bit influences ``Inf_i = E_x[(f(x) - f(x xor e_i))^2]`` ("01"; /4 on "pm1"), i = 1..n.

    They sum to ``average_sensitivity``. For a Boolean function, ``Inf_i = Pr[f(x) != f(x xor e_i)]``.
    """
    table, _ = _table(truth_table, scale)
    return _native.influences(truth_table=table, n_threads=resolve_threads(n_threads)) * _flip_factor(scale)


def average_sensitivity(truth_table: ArrayLike, *, scale: str = "01", method: str = "flips",
                        n_threads: int | None = None) -> float:
    """The paper's average sensitivity as_n (total influence), exactly.

    Parameters
    ----------
    truth_table : array-like
        2^n finite real values (n <= 26).
    scale : {"01", "pm1"}
        "01": ``sum_i E_x[(f(x) - f(x xor e_i))^2]``; "pm1": the same divided by 4. PARITY
        gives n and MEAN 1/n on either scale.
    method : {"flips", "fourier"}
        "flips" counts the flips directly (bit-packed and exact for 0/1 tables, no scratch
        memory); "fourier" computes ``sum_S |S| g^(S)^2`` from the transform (a 2^n scratch
        table). Both agree to rounding.
    n_threads : int, optional
    """
    check_choice(method, "method", ("flips", "fourier"))
    if method == "fourier":
        weights = degree_spectrum(truth_table, scale=scale, n_threads=n_threads)
        return float(np.dot(np.arange(weights.size), weights))
    return float(influences(truth_table, scale=scale, n_threads=n_threads).sum())


def sensitivity(truth_table: ArrayLike, *, scale: str = "01", n_threads: int | None = None) -> np.ndarray:
    """Sensitivity at every input, ``s(x) = sum_i (f(x) - f(x xor e_i))^2`` ("01"; /4 on "pm1").

    For a Boolean function, the number of bits whose flip changes f(x). Its mean is as_n.
    """
    table, _ = _table(truth_table, scale)
    return _native.point_sensitivity(truth_table=table, n_threads=resolve_threads(n_threads)) * _flip_factor(scale)


def sensitivity_profile(truth_table: ArrayLike, *, scale: str = "01", n_threads: int | None = None) -> np.ndarray:
    """``K[k] = #{x : s(x) = k}`` for k = 0..n, of a Boolean function (int64, sums to 2^n).

    The values must be Boolean on the given scale ({0, 1} or {-1, +1}).
    """
    table, _ = _table(truth_table, scale, boolean=True)
    if scale == "pm1":
        table = to_01(table)
    return _native.sensitivity_profile(truth_table=table, n_threads=resolve_threads(n_threads))


def max_sensitivity(truth_table: ArrayLike, *, scale: str = "01", n_threads: int | None = None) -> int:
    """``s(f) = max_x s(x)`` of a Boolean function (values Boolean on the given scale)."""
    profile = sensitivity_profile(truth_table, scale=scale, n_threads=n_threads)
    return int(np.flatnonzero(profile)[-1])


# ---- models and other functions of the bits ----------------------------------------------------

@dataclass(frozen=True)
class SensitivityEstimate(Estimate):
    """The average sensitivity of a function, exact or Monte-Carlo, with its details.

    An ``Estimate`` (``value`` = as_n on the +-1 scale, ``stderr``, ``n_samples``,
    ``samples``) with what researchers look at next.

    Attributes
    ----------
    exact : bool
        True: ``value`` is exact over all 2^n inputs, ``stderr`` is 0 and ``n_samples`` is
        2^n. False: a Monte-Carlo mean over ``n_samples`` uniform inputs, each with all n
        flips; ``samples`` holds the per-input sensitivities and ``stderr`` their standard
        error.
    n : int
    scale : {"01", "pm1"}
        The scale the analysed values were read on ("01" after thresholding).
    threshold : float or None
        Outputs were binarised with ``out > threshold`` first (None: raw outputs).
    influences : numpy.ndarray
        (n,) per-bit influences on the same scale (Monte-Carlo: their estimates).
    influence_stderr : numpy.ndarray
        (n,) standard errors of ``influences`` (zeros when exact).
    profile : numpy.ndarray or None
        (n+1,) int64 sensitivity profile ``K[k] = #{x : s(x) = k}``: exact runs on Boolean
        values only.
    table : numpy.ndarray or None
        The analysed truth table (exact runs): feed it to the other functions of this module,
        e.g. ``fourier(result.table)`` or ``sensitivity(result.table)``.
    """

    exact: bool = False
    n: int = 0
    scale: str = "01"
    threshold: float | None = None
    influences: np.ndarray | None = field(default=None, repr=False, compare=False)
    influence_stderr: np.ndarray | None = field(default=None, repr=False, compare=False)
    profile: np.ndarray | None = field(default=None, repr=False, compare=False)
    table: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def max_sensitivity(self) -> int | None:
        """Largest sensitivity over all inputs (exact Boolean runs; else None)."""
        return None if self.profile is None else int(np.flatnonzero(self.profile)[-1])


def _batch_function(model, n, n_threads):
    """A function (batch, n) uint8 tokens -> (batch,) float64 for a Transformer, Target or callable."""
    if isinstance(model, Transformer):
        if n > model.n_positions:
            raise ValueError(f"n={n} is longer than the model's n_positions={model.n_positions}")
        model.require_finite("the model's sensitivity")
        return lambda x: np.asarray(model.forward(x, n_threads=n_threads), dtype=np.float64)
    if isinstance(model, Target):
        if model.n != n:
            raise ValueError(f"n={n} but the target {model!r} is defined on n={model.n} bits")
        return model
    if callable(model):
        return Callable(model, n)
    raise TypeError(f"model must be a sensiformer.Transformer, a sensiformer.targets.Target or a vectorised "
                    f"callable, got {type(model).__name__}")


def _chunk_rows(model, n, chunk_size):
    """Rows per call: ``chunk_size``, or enough to fill the token budget (a Transformer's
    activation workspace grows with its batch; targets and callables only need the inputs)."""
    if chunk_size is None:
        return max(1, FORWARD_TOKENS // n if isinstance(model, Transformer) else _CHUNK_TOKENS_CHEAP // n)
    return check_int(chunk_size, "chunk_size", 1)


def _check_exact_n(n, where):
    if n > MAX_EXACT_N:
        raise ValueError(f"{where} enumerates all 2**n inputs, and n={n} is beyond the exact limit of {MAX_EXACT_N}; "
                         "use the Monte-Carlo mode instead: model_sensitivity(..., exact=False, samples=...) or "
                         "estimate_sensitivity(...)")


def _progress(total, progress, desc, unit):
    """A tqdm bar over ``total`` inputs; ``progress=None`` shows it for long enumerations only
    (from 2^16 inputs: seconds to minutes). ``TQDM_DISABLE`` silences it either way."""
    from tqdm.auto import tqdm

    show = total >= _AUTO_PROGRESS_INPUTS if progress is None else check_bool(progress, "progress")
    return tqdm(total=total, disable=not show or tqdm_env_disabled(), desc=desc, unit=unit, leave=False)


def truth_table(model: AnalysedFunction, n: int, *, chunk_size: int | None = None, progress: bool = False,
                n_threads: int | None = None) -> np.ndarray:
    """Raw outputs of a model (or target, or vectorised callable) on all 2^n inputs.

    Parameters
    ----------
    model : Transformer, Target or callable
        A callable maps a (batch, n) uint8 array of 0/1 tokens to (batch,) values.
    n : int
        Input length, 1 <= n <= 26 (and <= the model's n_positions).
    chunk_size : int, optional
        Inputs per call, rounded down to a power of two (default: about 16k tokens for a
        Transformer, 1M for a callable), so memory stays bounded whatever n is.
    progress : bool
        Show a tqdm progress bar.
    n_threads : int, optional
        Passed to ``model.forward``.

    Returns
    -------
    numpy.ndarray
        (2^n,) float64 outputs in truth-table order (x_1 the most significant bit). A Target
        gives ``target.truth_table()``.
    """
    n = check_int(n, "n", 1)
    _check_exact_n(n, "truth_table")
    fn = _batch_function(model, n, n_threads)
    if isinstance(model, Target):
        return model.truth_table()
    k = min(n, max(0, _chunk_rows(model, n, chunk_size).bit_length() - 1))  # aligned blocks of 2^k inputs
    x = np.empty((2**k, n), dtype=np.uint8)
    x[:, n - k:] = inputs_from_indices(np.arange(2**k), k) if k else 0
    high = inputs_from_indices(np.arange(2 ** (n - k)), n - k) if n > k else None
    out = np.empty(2**n)
    with _progress(2**n, progress, "truth table", "input") as bar:
        for block in range(2 ** (n - k)):
            if high is not None:
                x[:, :n - k] = high[block]
            out[block << k:(block + 1) << k] = fn(x)
            bar.update(2**k)
    finite = np.isfinite(out)
    if not finite.all():
        raise ValueError(f"the model's output is not finite (NaN or inf), first at input index {np.argmin(finite)}")
    return out


def _analysed(table, threshold, scale):
    """Binarise with the threshold (then the "01" scale applies), or keep the raw values."""
    return (table, scale) if threshold is None else (binarize(table, threshold=threshold), "01")


def _exact_result(table, n, threshold, scale, n_threads):
    values, scale = _analysed(table, threshold, scale)
    inf = influences(values, scale=scale, n_threads=n_threads)
    low = 0.0 if scale == "01" else -1.0
    boolean = bool(np.all((values == low) | (values == 1.0)))
    profile = sensitivity_profile(values, scale=scale, n_threads=n_threads) if boolean else None
    return SensitivityEstimate(float(inf.sum()), 0.0, 2**n, None, exact=True, n=n, scale=scale, threshold=threshold,
                               influences=inf, influence_stderr=np.zeros(n), profile=profile, table=values)


def _sample_block(seed, block, n):
    """Block ``block`` of the Monte-Carlo input stream of ``seed``: uniform bits in fixed blocks,
    so that the inputs depend on (seed, sample index) only, never on the chunking."""
    return np.random.default_rng([seed, block]).integers(0, 2, size=(_SAMPLE_BLOCK, n), dtype=np.uint8)


def estimate_sensitivity(model: AnalysedFunction, n: int, *, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                         threshold: float | None = None, scale: str = "01", chunk_size: int | None = None,
                         progress: bool = False, n_threads: int | None = None) -> SensitivityEstimate:
    """Monte-Carlo average sensitivity for any n: uniform inputs, each with all n flips.

    Each sampled input x contributes ``s(x) = sum_i (f(x) - f(x xor e_i))^2`` (/4 on "pm1"),
    and ``value`` is their mean, with the standard error ``std(s) / sqrt(samples)`` of
    independent draws. Each input and its n flips go to the model in the same call.

    Parameters
    ----------
    model : Transformer, Target or callable
        See ``truth_table``.
    n : int
        Input length.
    samples : int
        Number of sampled inputs (>= 2); the model sees ``samples * (n + 1)`` rows.
    seed : int
        The inputs depend only on (seed, sample index).
    threshold : float, optional
        Binarise outputs with ``out > threshold`` first (the paper's accuracy rule is 0.5).
    scale : {"01", "pm1"}
        How to read raw outputs (ignored after thresholding).
    chunk_size : int, optional
        Rows per model call (default: about 16k tokens).
    progress : bool
    n_threads : int, optional

    Returns
    -------
    SensitivityEstimate
        With ``exact=False``, ``samples`` the per-input sensitivities, and per-bit influence
        estimates with their standard errors.
    """
    n = check_int(n, "n", 1)
    samples = check_int(samples, "samples", 2)
    seed = check_seed(seed)
    check_choice(scale, "scale", SCALES)
    threshold = None if threshold is None else check_float(threshold, "threshold")
    fn = _batch_function(model, n, n_threads)
    factor = _flip_factor("01" if threshold is not None else scale)
    per_call = max(1, _chunk_rows(model, n, chunk_size) // (n + 1))
    check_memory(samples * 8, f"estimate_sensitivity's {samples} per-input values")
    flips = np.vstack([np.zeros((1, n), np.uint8), np.eye(n, dtype=np.uint8)])  # row 0: x itself
    s = np.empty(samples)
    inf_sum, inf_sq = np.zeros(n), np.zeros(n)
    with _progress(samples, progress, "sensitivity", "input") as bar:
        for block_start in range(0, samples, _SAMPLE_BLOCK):
            inputs = _sample_block(seed, block_start // _SAMPLE_BLOCK, n)[:samples - block_start]
            for offset in range(0, len(inputs), per_call):
                x = inputs[offset:offset + per_call]
                m, start = len(x), block_start + offset
                batch = (x[:, None, :] ^ flips[None, :, :]).reshape(m * (n + 1), n)
                out = fn(batch).reshape(m, n + 1)
                if threshold is not None:
                    out = binarize(out, threshold=threshold)
                d2 = (out[:, 1:] - out[:, :1]) ** 2 * factor
                s[start:start + m] = d2.sum(axis=1)
                inf_sum += d2.sum(axis=0)
                inf_sq += (d2**2).sum(axis=0)
                bar.update(m)
    inf = inf_sum / samples
    inf_stderr = np.sqrt(np.maximum(inf_sq / samples - inf**2, 0.0) / (samples - 1))  # sample std / sqrt(samples)
    return SensitivityEstimate(float(s.mean()), float(s.std(ddof=1) / np.sqrt(samples)), samples, s, exact=False, n=n,
                               scale="01" if threshold is not None else scale, threshold=threshold,
                               influences=inf, influence_stderr=inf_stderr)


def model_sensitivity(model: AnalysedFunction, n: int, *, exact: bool = True, samples: int | None = None, seed: int = 0,
                      threshold: float | None = 0.5, scale: str = "01", chunk_size: int | None = None,
                      progress: bool | None = None, n_threads: int | None = None) -> SensitivityEstimate:
    """Average sensitivity of the function a model computes on {0,1}^n.

    Parameters
    ----------
    model : Transformer, Target or callable
        See ``truth_table``.
    n : int
        Input length (<= the model's n_positions).
    exact : bool
        True: enumerate all 2^n inputs (n <= 26); the result carries the influences, the
        sensitivity profile (for Boolean values) and the analysed truth table. False:
        Monte-Carlo with ``samples`` inputs (``estimate_sensitivity``).
    samples : int, optional
        Monte-Carlo inputs (default 2000); only with ``exact=False``.
    seed : int
        Monte-Carlo input stream.
    threshold : float or None
        0.5 (default): analyse the Boolean function ``out > 0.5`` that the model computes, as
        the paper's generalization experiment does. None: analyse the raw outputs on
        ``scale``.
    scale : {"01", "pm1"}
        How to read raw outputs ("pm1" for a model trained on +-1 labels).
    progress : bool, optional
        Show a tqdm progress bar; by default only for 2^16 inputs or more (n >= 16 exact, or
        that many Monte-Carlo samples). ``TQDM_DISABLE=1`` silences it.
    chunk_size, n_threads
        As in ``truth_table``.

    Returns
    -------
    SensitivityEstimate
        ``value`` is as_n on the +-1 scale: a PARITY model gives n.
    """
    n = check_int(n, "n", 1)
    if not isinstance(exact, (bool, np.bool_)):
        raise TypeError(f"exact must be a bool, got {exact!r}")
    threshold = None if threshold is None else check_float(threshold, "threshold")
    if not exact:
        return estimate_sensitivity(model, n, samples=DEFAULT_SAMPLES if samples is None else samples, seed=seed,
                                    threshold=threshold, scale=scale, chunk_size=chunk_size, progress=progress,
                                    n_threads=n_threads)
    if samples is not None:
        raise ValueError("samples applies to the Monte-Carlo mode only: pass exact=False with samples")
    check_choice(scale, "scale", SCALES)
    _check_exact_n(n, "model_sensitivity(exact=True)")
    table = truth_table(model, n, chunk_size=chunk_size, progress=progress, n_threads=n_threads)
    return _exact_result(table, n, threshold, scale, n_threads)
