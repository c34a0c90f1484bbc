"""Argument checks shared by the public API: clear exceptions that name the argument."""

from __future__ import annotations

import numbers
import operator
import warnings

import numpy as np

MAX_INT64 = 2**63 - 1  # the engine's step counters and byte counts are int64
REAL_KINDS = "biuf"  # bool, int, uint, float: NumPy also counts timedelta64 as a number, not accepted here


def check_int(value, name, minimum=None, maximum=None):
    """Return ``value`` as an int, refusing bools, floats and out-of-range values."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(value, name, minimum=None, maximum=None, allow_inf=False):
    """Return ``value`` as a finite float within the given closed range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if np.isnan(value) or (not allow_inf and not np.isfinite(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_count(value, name, minimum=0):
    """An integer step or count the engine keeps as int64: larger values are refused here, with
    the argument's name, instead of overflowing in the C boundary."""
    return check_int(value, name, minimum, MAX_INT64)


def check_bool(value, name):
    """Only real booleans: bool('no') is True, so strings are refused rather than guessed."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")
    return bool(value)


def as_finite_array(value, name, dtype, shape=None):
    """``value`` (array-like or torch tensor) as a finite real array of ``dtype``; the checks run
    on the converted values, so an overflow in the cast (1e300 into float32) is caught."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be finite numbers (real, not complex), got dtype {arr.dtype}")
    if arr.dtype.kind not in REAL_KINDS:
        raise TypeError(f"{name} must be finite numbers (a real numeric array), got dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    arr = quiet_cast(arr, dtype)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite in {np.dtype(dtype).name} (NaN, inf or overflow found)")
    return arr


def quiet_cast(arr, dtype):
    """``arr`` as a C-contiguous, aligned array of ``dtype`` (the layout the engine reads), without
    NumPy's overflow warning: callers check finiteness and raise an error naming the argument."""
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.require(arr, dtype=dtype, requirements=["C_CONTIGUOUS", "ALIGNED"])


def check_memory(nbytes, what):
    """Refuse a Python-side buffer beyond the memory limit the engine enforces on its own."""
    from . import _native

    limit = _native.build_info()["memory_limit"]
    if nbytes > limit:
        raise MemoryError(f"{what} needs {nbytes / 2**30:.3g} GB, more than the memory limit of "
                          f"{limit / 2**30:.3g} GB (sensiformer.set_memory_limit)")


def check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_seed(seed, name="seed"):
    """Seeds are non-negative integers below 2**64."""
    return check_int(seed, name, 0, 2**64 - 1)


def as_tokens(x, name="x", max_length=None):
    """A (batch, length) array of 0/1 tokens as C-contiguous uint8 (copied only if needed)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biu":  # (NumPy counts timedelta64 as an integer type: refused here)
        if arr.dtype.kind == "f" and arr.size and np.all(np.isin(arr, (0.0, 1.0))):
            pass  # floats that are exactly 0/1 are accepted
        else:
            raise TypeError(f"{name} must be an integer or bool array of 0/1 tokens, got dtype {arr.dtype}")
    if arr.ndim == 1:
        raise ValueError(f"{name} must be 2-D (batch, length); for one sequence use {name}[None, :]")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (batch, length), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sequence of length >= 1, got shape {arr.shape}")
    if max_length is not None and arr.shape[1] > max_length:
        raise ValueError(f"{name} has length {arr.shape[1]}, longer than the model's n_positions={max_length}")
    if arr.dtype != np.uint8:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} must hold tokens 0 or 1, found values in [{lo}, {hi}]")
        arr = arr.astype(np.uint8)
    elif arr.max() > 1:
        raise ValueError(f"{name} must hold tokens 0 or 1, found {int(arr.max())}")
    return np.ascontiguousarray(arr)


def as_values(y, name, length, dtype):
    """A 1-D finite real array of ``length`` entries in ``dtype`` (C-contiguous)."""
    arr = np.asarray(y)
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if arr.dtype.kind not in REAL_KINDS:
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {np.shape(y)}")
    arr = quiet_cast(arr, dtype)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return arr


def resolve_threads(n_threads):
    """None -> the package default; otherwise a positive integer."""
    from . import _native

    if n_threads is None:
        return 0
    return _native.resolve_threads(check_int(n_threads, "n_threads", 1, 512))


# ---- Boolean truth tables (sensiformer.analysis and sensiformer.targets) -------------------------

MAX_TABLE_N = 26  # 2^26 float64 values = 512 MiB; csrc/boolean.h's SF_BOOLEAN_MAX_N
MAX_TABLE_VALUE = 1e150  # squared coefficients, influences and their sums stay finite in float64


def as_truth_table(values, name="truth_table", max_n=MAX_TABLE_N):
    """``(table, n)``: 2**n finite real values as a C-contiguous float64 array (copied only if needed)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in REAL_KINDS:
        raise TypeError(f"{name} must be a real numeric array (bool, int or float), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (2**n values in truth-table order), got shape {arr.shape}")
    size = arr.shape[0]
    if size < 2 or size & (size - 1):
        raise ValueError(f"{name} must have 2**n entries for some n >= 1, got {size}")
    n = size.bit_length() - 1
    if n > max_n:
        raise ValueError(f"{name} has 2**{n} entries, but exact analysis handles n <= {max_n}")
    arr = quiet_cast(arr, np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{name} must be finite, found {arr[i]} at index {i}")
    big = np.abs(arr) > MAX_TABLE_VALUE
    if big.any():
        i = int(np.argmax(big))
        raise ValueError(f"{name} values must lie within +-{MAX_TABLE_VALUE:g} (sums of their squares must not "
                         f"overflow), found {arr[i]} at index {i}")
    return arr, n


def check_boolean_table(table, name, scale):
    """Refuse values other than {0, 1} (scale '01') or {-1, +1} (scale 'pm1'), naming the first."""
    low = 0.0 if scale == "01" else -1.0
    bad = (table != low) & (table != 1.0)
    if bad.any():
        i = int(np.argmax(bad))
        allowed = "{0, 1}" if scale == "01" else "{-1, +1}"
        raise ValueError(f"{name} must be Boolean ({allowed} for scale={scale!r}) here, "
                         f"found {float(table[i])} at index {i}")
    return table
