"""Hypothesis fuzzing of sensiformer.analysis, sensiformer.targets and the model/checkpoint files.

Valid inputs are checked against small NumPy reference implementations (Walsh-Hadamard
transform, flip counting, the target definitions); invalid ones must raise an expected exception
naming the argument; damaged files must be refused (or, if a damage is harmless, load exactly
what was saved) and leave the trainer unchanged. Like tests/test_fuzz_engine.py, the targets run
in a crash-isolating child (tests/test_fuzz_runner.py).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st


import sf_fuzz_runner as R  # registered by conftest.py (pytest) or the fuzzing child

S = R.strategies()
note_case, examples, outcome = R.note_case, R.examples, R.outcome
ALLOWED, check_error, fuzz_settings, is_int, is_real, as_array = (R.ALLOWED, R.check_error, R.fuzz_settings, R.is_int,
                                                                   R.is_real, R.as_array)

import sensiformer as sf  # noqa: E402
from sensiformer import _native, analysis, targets  # noqa: E402

R.setup_child(__name__)


# ================================================================================================
# NumPy references
# ================================================================================================

def fwht_ref(a):
    a = np.array(a, dtype=np.float64)
    h = 1
    while h < a.size:
        a = a.reshape(-1, 2, h)
        a = np.stack([a[:, 0] + a[:, 1], a[:, 0] - a[:, 1]], axis=1).reshape(-1)
        h *= 2
    return a


def popcounts(n):
    return np.array([bin(i).count("1") for i in range(2**n)])


def fourier_ref(table, scale):
    g = 1 - 2 * table if scale == "01" else table
    return fwht_ref(g) / table.size


def flips_ref(table, scale):
    """(per-bit influences, per-input sensitivities) on the +-1 scale."""
    n = table.size.bit_length() - 1
    factor = 1.0 if scale == "01" else 0.25
    idx = np.arange(table.size)
    d2 = np.stack([(table - table[idx ^ (1 << (n - 1 - j))]) ** 2 for j in range(n)], axis=1) * factor
    return d2.mean(axis=0), d2.sum(axis=1)


def spectrum_ref(table, scale):
    c = fourier_ref(table, scale)
    n = table.size.bit_length() - 1
    pc = popcounts(n)
    return np.array([np.sum(c[pc == k] ** 2) for k in range(n + 1)]), c, pc


# ================================================================================================
# Exact analysis of truth tables
# ================================================================================================

table_sizes = st.sampled_from([(2,), (4,), (8,), (16,), (32,), (64,), (0,), (1,), (3,), (6,), (), (2, 2), (4, 1)])
table_palette = st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, -3.0, 1e-300, 1e300, 1e308, float("nan"), float("inf"),
                                 2**64, True, 1 + 1j, "a", None])
CLEAN_01 = st.sampled_from([0.0, 1.0])
CLEAN_PM1 = st.sampled_from([-1.0, 1.0])
CLEAN_REAL = st.sampled_from([0.0, 1.0, -1.0, 0.5, 0.25, -2.0, 3.0])
TABLE_DTYPES = [d for d in S["dtypes"]] + ["float64"] * 6
VALID_SIZES = st.sampled_from([(2,), (4,), (8,), (16,), (32,), (64,)])
VALID_TABLE_DTYPES = ["float64", "float64", "float64", "float32", "float16", ">f8", "int64", "int8", "uint8", "bool"]
fuzzy_tables = st.one_of(S["arrays"](table_sizes, table_palette, clean=CLEAN_01, dtype_choices=TABLE_DTYPES),
                         S["arrays"](table_sizes, table_palette, clean=CLEAN_PM1, dtype_choices=TABLE_DTYPES),
                         S["arrays"](table_sizes, table_palette, clean=CLEAN_REAL, dtype_choices=TABLE_DTYPES))
valid_tables = st.one_of(S["arrays"](VALID_SIZES, CLEAN_01, dtype_choices=VALID_TABLE_DTYPES),
                         S["arrays"](VALID_SIZES, CLEAN_PM1, dtype_choices=VALID_TABLE_DTYPES),
                         S["arrays"](VALID_SIZES, CLEAN_REAL, dtype_choices=VALID_TABLE_DTYPES))
tables = S["mix"]((2, valid_tables), (1, fuzzy_tables))
FUNCTIONS = ["fourier", "inverse_fourier", "degree_spectrum", "degree", "noise_stability", "noise_sensitivity",
             "influences", "average_sensitivity", "sensitivity", "sensitivity_profile", "max_sensitivity", "fwht"]


def table_contract(table):
    """(float64 table, n) if ``table`` meets as_truth_table's contract, else None."""
    arr = as_array(table)
    if arr is None or arr.dtype.kind not in "biuf" or arr.ndim != 1:
        return None
    size = arr.shape[0]
    if size < 2 or size & (size - 1) or size.bit_length() - 1 > 26:
        return None
    with np.errstate(all="ignore"):
        values = arr.astype(np.float64)
    if not np.all(np.isfinite(values)) or np.max(np.abs(values)) > 1e150:  # squares must not overflow
        return None
    return values, size.bit_length() - 1


@fuzz_settings(800)
@given(st.sampled_from(FUNCTIONS), tables, st.sampled_from(["01", "01", "pm1", "pm1", "01", "x", None]),
       st.sampled_from([None, None, None, 1, 1, 2, 0, "1"]),
       st.sampled_from([0.0, 0.3, 1.0, -1.0, 0.5, 0.0, 0.3, 0.5, 1e-9, 2.0, float("nan"), "0.5"]),
       st.sampled_from(["flips", "fourier", "flips", "fourier", "other"]))
def fuzz_table_analysis(fn, table, scale, n_threads, param, method):
    note_case(fn=fn, table=table, scale=scale, n_threads=n_threads, param=param, method=method)
    contract = table_contract(table)
    scale_ok = scale in ("01", "pm1")
    threads_ok = n_threads is None or (is_int(n_threads) and n_threads >= 1)
    kwargs = dict(n_threads=n_threads)
    valid = contract is not None and threads_ok
    if fn != "fwht":
        kwargs["scale"] = scale
        valid = valid and scale_ok
    if fn == "degree":
        kwargs["tol"] = param
        valid = valid and is_real(param) and math.isfinite(param) and param >= 0
    elif fn == "noise_stability":
        kwargs["rho"] = param
        valid = valid and is_real(param) and -1 <= param <= 1
    elif fn == "noise_sensitivity":
        kwargs["delta"] = param
        valid = valid and is_real(param) and 0 <= param <= 1
    elif fn == "average_sensitivity":
        kwargs["method"] = method
        valid = valid and method in ("flips", "fourier")
    elif fn in ("sensitivity_profile", "max_sensitivity") and valid:
        low = 0.0 if scale == "01" else -1.0
        valid = bool(np.all((contract[0] == low) | (contract[0] == 1.0)))
    elif fn == "fwht":
        valid = valid and isinstance(table, np.ndarray) and table.dtype == np.float64 and table.flags.c_contiguous \
            and table.flags.writeable
    before = table.copy() if isinstance(table, np.ndarray) else None
    try:
        result = getattr(analysis, fn)(table, **kwargs)
    except Exception as err:
        assert not valid, f"{fn}: a valid call was refused: {type(err).__name__}: {err}"
        check_error(err, ["truth_table", "a", "coefficients", "scale", "tol", "rho", "delta", "method", "n_threads",
                          "n"], fn)
        outcome("refused")
        return
    assert valid, f"{fn}: an invalid call was accepted"
    outcome("ok")
    values, n = contract
    if fn != "fwht" and before is not None and table.dtype != object:
        assert table.tobytes() == before.tobytes(), f"{fn} changed its input"
    if np.max(np.abs(values)) > 1e6:
        return  # huge values: no crash and no refusal is all we ask (overflow to inf is IEEE behaviour)
    close = dict(rtol=1e-9, atol=1e-9)
    if fn == "fwht":
        np.testing.assert_allclose(result, fwht_ref(before), **close)
        assert result is table
    elif fn == "fourier":
        np.testing.assert_allclose(result, fourier_ref(values, scale), **close)
    elif fn == "inverse_fourier":
        g = fwht_ref(values)
        np.testing.assert_allclose(result, (1 - g) / 2 if scale == "01" else g, **close)
    else:
        weights, c, pc = spectrum_ref(values, scale)
        inf, sens = flips_ref(values, scale)
        if fn == "degree_spectrum":
            np.testing.assert_allclose(result, weights, **close)
        elif fn == "degree":
            above = np.flatnonzero(np.abs(c) > param * np.sqrt(weights.sum()) + 1e-12)
            assert isinstance(result, int) and 0 <= result <= n
            if above.size and np.all(np.abs(np.abs(c) - param * np.sqrt(weights.sum())) > 1e-9):
                assert result == pc[above].max()
        elif fn == "noise_stability":
            assert result == pytest.approx(np.sum(weights * param ** np.arange(n + 1)), rel=1e-9, abs=1e-9)
        elif fn == "noise_sensitivity":
            stab = np.sum(weights * (1 - 2 * param) ** np.arange(n + 1))
            assert result == pytest.approx(0.5 * (weights.sum() - stab), rel=1e-9, abs=1e-9)
        elif fn == "influences":
            np.testing.assert_allclose(result, inf, **close)
        elif fn == "average_sensitivity":
            assert result == pytest.approx(inf.sum(), rel=1e-9, abs=1e-9)
        elif fn == "sensitivity":
            np.testing.assert_allclose(result, sens, **close)
        elif fn in ("sensitivity_profile", "max_sensitivity"):
            counts = np.round(sens).astype(int)  # a Boolean table: every sensitive bit counts 1 on either scale
            profile = np.bincount(counts, minlength=n + 1)
            if fn == "sensitivity_profile":
                assert result.dtype == np.int64 and np.array_equal(result, profile)
            else:
                assert result == np.flatnonzero(profile)[-1]


# ================================================================================================
# Models, targets and callables on all inputs or sampled ones
# ================================================================================================

def _model(i):
    if i == 0:
        model = sf.Transformer(6, d_model=4, n_heads=2, n_layers=1, dtype="float64", seed=3)
    else:
        model = sf.Transformer(5, d_model=4, n_heads=1, n_layers=1, norm="pre", dtype="float32", seed=4)
    model.flat[:] = np.random.default_rng(i).normal(scale=0.8, size=model.num_parameters)
    return model


_MODELS = {}


def model_at(i):
    if i not in _MODELS:
        _MODELS[i] = _model(i)
    return _MODELS[i]


CALLABLES = {
    "parity": lambda x: x.sum(axis=1) % 2,
    "real": lambda x: x.mean(axis=1) * 0.7,
    "column": lambda x: (x[:, :1] * 1.0),
    "list": lambda x: [float(r[0]) for r in x],
    "strings": lambda x: np.array(["a"] * len(x)),
    "nan": lambda x: np.full(len(x), np.nan),
    "short": lambda x: np.zeros(max(len(x) - 1, 0)),
    "raises": lambda x: 1 / 0,
}


@st.composite
def analysed(draw):
    kind = draw(st.sampled_from(["transformer", "transformer", "target", "target", "callable", "junk"]))
    if kind == "transformer":
        return "transformer", draw(st.integers(0, 1))
    if kind == "target":
        return "target", draw(st.sampled_from(["parity", "majority", "first", "mean", "random"])), draw(
            st.integers(1, 7))
    if kind == "callable":
        return "callable", draw(st.sampled_from(sorted(CALLABLES) + ["parity", "real", "column"]))
    return "junk", draw(st.sampled_from([None, "model", 5]))


def _build(spec):
    if spec[0] == "transformer":
        return model_at(spec[1])
    if spec[0] == "target":
        maker = {"parity": targets.Parity, "majority": targets.Majority, "first": targets.First, "mean": targets.Mean,
                 "random": lambda n: targets.RandomFunction(n, seed=2)}[spec[1]]
        return maker(spec[2])
    if spec[0] == "callable":
        return CALLABLES[spec[1]]
    return spec[1]


VALID_ANALYSIS_KWARGS = st.fixed_dictionaries({}, optional={
    "chunk_size": st.sampled_from([None, 1, 3, 8, 64]),
    "exact": st.sampled_from([True, False]),
    "samples": st.sampled_from([2, 3, 17]),
    "seed": st.sampled_from([0, 9, 2**64 - 1]),
    "threshold": st.sampled_from([None, 0.5, 0.0]),
    "scale": st.sampled_from(["01", "pm1"]),
    "n_threads": st.sampled_from([None, 1])})
FUZZY_ANALYSIS_KWARGS = st.fixed_dictionaries({}, optional={
    "chunk_size": st.sampled_from([None, 1, 3, 8, 64, 0, -1, 2**70, 1.5]),
    "exact": st.sampled_from([True, False, "yes", None]),
    "samples": st.sampled_from([None, 2, 3, 17, 1, 0, -5, 2.0]),
    "seed": st.sampled_from([0, 9, -1, 2**64, 2**64 - 1]),
    "threshold": st.sampled_from([None, 0.5, 0.0, float("nan"), "0.5"]),
    "scale": st.sampled_from(["01", "pm1", "bad"]),
    "n_threads": st.sampled_from([None, 1, 0])})


FUZZY_N = st.one_of(S["ints"](st.integers(1, 6), huge_ok=False), st.sampled_from([27, 30]))
ANALYSIS_FNS = st.sampled_from(["truth_table", "model_sensitivity", "model_sensitivity", "estimate_sensitivity"])
ANALYSIS_KWARGS = S["mix"]((2, VALID_ANALYSIS_KWARGS), (1, FUZZY_ANALYSIS_KWARGS))


@st.composite
def model_analysis_case(draw):
    spec = draw(analysed())
    if draw(st.integers(0, 4)) == 0:
        n = draw(FUZZY_N)
    elif spec[0] == "target":
        n = spec[2]
    else:
        n = draw(st.integers(1, 5))
    return spec, draw(ANALYSIS_FNS), n, draw(ANALYSIS_KWARGS)


@fuzz_settings(400)
@given(model_analysis_case())
def fuzz_model_analysis(case):
    spec, fn, n, kwargs = case
    note_case(spec=spec, fn=fn, n=n, kwargs=kwargs)
    model = _build(spec)
    if fn == "truth_table":
        kwargs = {k: v for k, v in kwargs.items() if k in ("chunk_size", "n_threads")}
    elif fn == "estimate_sensitivity":
        kwargs.pop("exact", None)
        if kwargs.get("samples", 0) is None:
            del kwargs["samples"]
    elif kwargs.get("exact", True) is True and kwargs.get("samples") in (2, 3, 17) and len(kwargs) > 2:
        del kwargs["samples"]  # samples is for exact=False: keep most valid-looking calls valid
    if spec[0] == "target" and is_int(n) and n > 7:
        return  # large targets are covered elsewhere; keep examples fast
    params = model.flat.copy() if spec[0] == "transformer" else None
    try:
        result = getattr(analysis, fn)(model, n, **kwargs)
    except ZeroDivisionError:
        assert spec == ("callable", "raises")  # the user's function's own error propagates unchanged
        return
    except Exception as err:
        check_error(err, ["model", "n", "n_positions", "chunk_size", "exact", "samples", "seed", "threshold",
                          "scale", "n_threads", "fn", "target"], fn)
        outcome("refused")
        return
    finally:
        if params is not None:
            assert np.array_equal(model.flat, params), "analysis changed the model's parameters"
    assert spec[0] != "junk" and is_int(n)
    outcome(f"{fn} ok")
    if fn == "truth_table":
        assert result.shape == (2**n,) and result.dtype == np.float64 and np.all(np.isfinite(result))
        x = targets.all_inputs(n)
        if spec[0] == "transformer":
            whole = model.forward(x).astype(np.float64)
            if not np.array_equal(result, whole):
                # rows computed in calls of another size may differ in the last bit (float64 kernels
                # block by batch size); the values must agree to rounding
                outcome("last-bit rounding differs with the call's batch size")  # not promised: see the comment
                np.testing.assert_allclose(result, whole, rtol=1e-12 if model.dtype == np.float64 else 1e-5,
                                           atol=1e-12)
        elif spec[0] == "target":
            assert np.array_equal(result, model(x))
        again = analysis.truth_table(model, n, chunk_size=kwargs.get("chunk_size"))
        assert np.array_equal(result, again), "truth_table is not reproducible"
        return
    assert math.isfinite(result.value) and result.n == n and np.all(np.isfinite(result.influences))
    assert result.value == pytest.approx(result.influences.sum(), rel=1e-9, abs=1e-12)
    if result.exact:
        assert result.n_samples == 2**n and result.stderr == 0
        table = result.table
        scale = result.scale
        inf, _ = flips_ref(table, scale)
        np.testing.assert_allclose(result.influences, inf, rtol=1e-9, atol=1e-12)
    else:
        assert result.n_samples == len(result.samples) >= 2 and math.isfinite(result.stderr)
        other = dict(kwargs, threshold=result.threshold)
        other.pop("exact", None)
        other.pop("samples", None)
        again = analysis.estimate_sensitivity(model, n, samples=result.n_samples, **other)
        assert np.array_equal(again.samples, result.samples), "Monte-Carlo samples are not reproducible"
        if spec[0] != "transformer" or result.threshold is not None:  # thresholded: rounding cannot matter
            other["chunk_size"] = 5 if kwargs.get("chunk_size") != 5 else 7
            chunked = analysis.estimate_sensitivity(model, n, samples=result.n_samples, **other)
            if not np.array_equal(chunked.samples, result.samples):
                assert spec[0] == "transformer"
                outcome("samples differ in rounding with chunk_size")
        if spec[:2] == ("target", "parity") and result.threshold is not None:
            assert np.all(result.samples == n)  # every flip changes parity


# ================================================================================================
# Targets
# ================================================================================================

def _reference(target, x):
    """The target's definition evaluated in NumPy on {0,1} rows."""
    x = x.astype(np.int64)
    n = x.shape[1]
    if isinstance(target, targets.SparseParity):
        return (x[:, target.bits].sum(axis=1) % 2).astype(float)
    if isinstance(target, targets.Junta):
        idx = (x[:, target.bits] * (1 << np.arange(target.k - 1, -1, -1))).sum(axis=1)
        return target.table[idx]
    if isinstance(target, targets.FourierFunction):
        g = np.zeros(len(x))
        for t in range(target.coefficients.size):
            S_ = target.bits[target.set_offsets[t]:target.set_offsets[t + 1]]
            g += target.coefficients[t] * (-1.0) ** x[:, S_].sum(axis=1)
        return (g < 0).astype(float) if target.output == "sign" else (1 - g) / 2
    if isinstance(target, (targets.RandomFunction, targets.TruthTable)):
        return target.table[(x * (1 << np.arange(n - 1, -1, -1))).sum(axis=1)]
    s = x.sum(axis=1)
    if isinstance(target, targets.Parity):
        return (s % 2).astype(float)
    if isinstance(target, targets.Majority):
        return (2 * s > n).astype(float)
    if isinstance(target, targets.First):
        return x[:, 0].astype(float)
    if isinstance(target, targets.Mean):
        return s / n
    return None


def mostly(valid, fuzzy):
    return S["mix"]((3, valid), (1, fuzzy))


n_arg = mostly(st.integers(1, 8), S["ints"](st.integers(1, 8), huge_ok=False) | st.sampled_from([4096, 4097]))
noise_arg = mostly(st.sampled_from([0.0, 0.1, 1.0]), st.sampled_from([-0.1, 1.5, float("nan"), "0.1", True]))
bits_arg = mostly(st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True),
                  st.one_of(st.lists(st.integers(-1, 8), min_size=0, max_size=4), st.just([0.0, 1.0]), st.just("01"),
                            st.just(np.array([[0, 1]])), st.just(np.array([2**64 - 1], np.uint64))))
coefficient_keys = st.one_of(st.lists(st.integers(-1, 8), max_size=3).map(tuple), st.integers(-1, 8),
                             st.sampled_from([1.5, "a", (0, (1,)), None]))
coefficient_values = st.sampled_from([0.5, -0.25, 1.0, 0.0, float("nan"), "1", 1e300])


@st.composite
def target_case(draw):
    kind = draw(st.sampled_from(["Parity", "Majority", "First", "Mean", "RandomFunction", "TruthTable",
                                 "SparseParity", "Junta", "FourierFunction", "RandomDegree", "Callable"]))
    kw = {}
    if kind == "TruthTable":
        args = (draw(tables),)
    elif kind == "FourierFunction":
        if draw(st.booleans()):
            args = (draw(tables),)
            if draw(st.booleans()):
                kw["n"] = draw(n_arg)
        else:
            args = (draw(st.dictionaries(coefficient_keys, coefficient_values, max_size=4)),)
            kw["n"] = draw(n_arg | st.none())
        kw["output"] = draw(st.sampled_from(["real", "sign", "real", "sign", "bad"]))
    elif kind == "RandomFunction":
        args = (draw(mostly(st.integers(1, 10), S["ints"](st.integers(1, 10), huge_ok=False))),)
        kw["seed"] = draw(st.sampled_from([0, 3, 3, -1]))
    elif kind == "SparseParity":
        args = (draw(n_arg), draw(bits_arg))
    elif kind == "Junta":
        args = (draw(n_arg),)
        choice = draw(st.sampled_from(["k", "k", "bits", "bits", "both", "neither", "table"]))
        if choice in ("k", "both"):
            kw["k"] = draw(mostly(st.integers(1, 3), S["ints"](st.integers(1, 4), huge_ok=False)))
        if choice in ("bits", "both", "table"):
            kw["bits"] = draw(bits_arg)
        if choice == "table":
            kw["table"] = draw(tables)
    elif kind == "RandomDegree":
        args = (draw(mostly(st.integers(1, 10), S["ints"](st.integers(1, 10), huge_ok=False))),
                draw(mostly(st.integers(0, 3), S["ints"](st.integers(0, 3), huge_ok=False))))
        kw["output"] = draw(st.sampled_from(["sign", "real", "sign", "real", "bad"]))
    elif kind == "Callable":
        args = (draw(st.sampled_from([CALLABLES["parity"], CALLABLES["real"], CALLABLES["parity"], CALLABLES["real"],
                                      CALLABLES["strings"], 5])),
                draw(n_arg))
    else:
        args = (draw(n_arg),)
    if draw(st.booleans()):
        kw["noise"] = draw(noise_arg)
    x_kind = draw(st.sampled_from(["valid", "valid", "fuzz"]))
    x = draw(S["arrays"](st.sampled_from([(3, 0), (4, 1), (0, 2)]), st.sampled_from([0, 1, 2]))) \
        if x_kind == "fuzz" else None
    step = draw(st.sampled_from([0, 5, -1, 2**63 - 1, 2**63, 1.5]))
    return kind, args, kw, x, step, draw(st.integers(0, 2**32 - 1))


TARGET_ARG_NAMES = ["n", "bits", "k", "table", "coefficients", "output", "noise", "seed", "fn", "x", "scale", "step",
                    "a set of positions", "the coefficient", "positions"]


@fuzz_settings(600)
@given(target_case())
def fuzz_targets(case):
    kind, args, kw, x, step, seed = case
    note_case(kind=kind, args=args, kw=kw, x=x, step=step)
    try:
        target = getattr(targets, kind)(*args, **kw)
    except Exception as err:
        check_error(err, TARGET_ARG_NAMES, kind)
        outcome(f"{kind} refused")
        return
    rng = np.random.default_rng(seed)
    n = target.n
    if x is None:
        x = rng.integers(0, 2, size=(int(rng.integers(1, 6)), n))
        if rng.random() < 0.3:
            x = S["layout"](x.astype(rng.choice(["uint8", "bool", "int16", ">i8", "float32"])),
                            rng.choice(["C", "F", "strided_cols", "reversed", "list"]))
    try:
        y = target(x)
    except Exception as err:
        check_error(err, TARGET_ARG_NAMES, f"{kind}.__call__")
        outcome("call refused")
    else:
        outcome("call ok")
        xa = np.asarray(x)
        assert xa.ndim == 2 and xa.shape[1] == n
        assert y.shape == (xa.shape[0],) and y.dtype == np.float64 and np.all(np.isfinite(y))
        ref = _reference(target, xa)
        if ref is not None:
            np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(target(x, scale="pm1"), 1 - 2 * y, rtol=0, atol=1e-15)
        if target.boolean is True:
            assert np.all((y == 0) | (y == 1))
        try:
            noisy = target.noisy(x, seed=seed, step=step)
        except Exception as err:
            check_error(err, ["seed", "step"], "noisy")
        else:
            assert np.array_equal(noisy, target.noisy(x, seed=seed, step=step))
            if not target.noise:
                assert np.array_equal(noisy, y)
            else:
                assert np.all((noisy == y) | (noisy == 1 - y))
    if n <= 10:
        try:
            table = target.truth_table()
        except Exception as err:
            assert isinstance(target, targets.Callable), f"truth_table failed: {err}"
            check_error(err, ["fn"], "Callable.truth_table")
            return
        assert table.shape == (2**n,)
        np.testing.assert_allclose(table, target(targets.all_inputs(n)), rtol=1e-12, atol=1e-12)
        if not target.noise:
            bx, by = _native.sample_batch(target=target.engine_spec(), sampler=(0, None, None, None), seed=seed,
                                          step=0, batch_size=8, seq_len=n)
            np.testing.assert_allclose(by, target(bx), rtol=1e-12, atol=1e-12)


# ================================================================================================
# Files: model files and checkpoints, damaged or crafted
# ================================================================================================

_FILES = {}


def _workdir():
    if "dir" not in _FILES:
        base = os.environ.get("SF_TEST_WORKDIR") or tempfile.mkdtemp()
        _FILES["dir"] = Path(tempfile.mkdtemp(dir=base))
    return _FILES["dir"]


def _make_trainer():
    model = sf.Transformer(5, d_model=4, n_heads=1, n_layers=1, seed=1)
    return sf.Trainer(model, targets.Parity(5), optimizer=sf.AdamW(lr=1e-2), batch_size=8, seed=2)


def _originals():
    if "model" not in _FILES:
        d = _workdir()
        model = sf.Transformer(5, d_model=4, n_heads=1, n_layers=1, seed=7)
        model.flat[:] = np.random.default_rng(0).normal(size=model.num_parameters)
        model.save(d / "model.npz")
        trainer = _make_trainer()
        trainer.fit(3, log_every=1, progress=False)
        trainer.save_checkpoint(d / "ck.npz")
        _FILES.update(model=model, model_bytes=(d / "model.npz").read_bytes(), trainer=trainer,
                      ck_bytes=(d / "ck.npz").read_bytes())
    return _FILES


def _damage(data, how, pos, value, length):
    pos = pos % max(len(data), 1)
    if how == "truncate":
        return data[:pos]
    if how == "flip":
        out = bytearray(data)
        out[pos] ^= value or 1
        return bytes(out)
    if how == "flip_many":
        out = bytearray(data)
        for k in range(length):
            out[(pos + 97 * k) % len(out)] ^= (value + k) % 255 + 1
        return bytes(out)
    if how == "append":
        return data + bytes([value]) * length
    if how == "garbage":
        return bytes((value * k + pos) % 256 for k in range(length * 40))
    if how == "empty":
        return b""
    return data


def _crafted(kind, edit, files):
    """A file whose checksum is valid but whose content is not what the library writes."""
    from sensiformer import checkpoint

    raw = files["ck_bytes"] if kind == "checkpoint" else files["model_bytes"]
    import io

    with np.load(io.BytesIO(raw)) as z:
        contents = {k: z[k] for k in z.files}
    meta_text = str(contents.pop("__meta__"))
    contents.pop("__checksum__", None)
    meta = json.loads(meta_text)
    if edit == "meta_not_json":
        meta_text = "{{{"
    elif edit == "meta_list":
        meta_text = "[1, 2]"
    else:
        if edit == "config_not_dict" and kind == "model":
            meta["config"] = 5
        elif edit == "config_extra" and kind == "model":
            meta["config"]["bogus"] = 1
        elif edit == "config_bad" and kind == "model":
            meta["config"]["d_model"] = -4
        elif edit == "step_negative":
            meta["step_count"] = -5
        elif edit == "step_str":
            meta["step_count"] = "x"
        elif edit == "history_bad":
            meta["history"] = 5
        elif edit == "params_nan":
            key = "params" if kind == "checkpoint" else "param/linear_head.bias"
            contents[key] = np.full_like(contents[key], np.nan)
        elif edit == "exp_avg_shape" and kind == "checkpoint":
            contents["exp_avg"] = np.zeros(3)
        elif edit == "drop_exp_avg" and kind == "checkpoint":
            del contents["exp_avg"]
        meta_text = json.dumps(meta)
    buf = io.BytesIO()
    if kind == "checkpoint":
        np.savez(buf, __meta__=np.array(meta_text), __checksum__=np.array(checkpoint._digest(meta_text, contents)),
                 **contents)
    else:
        np.savez(buf, __meta__=np.array(meta_text), **contents)
    return buf.getvalue()


@fuzz_settings(400)
@given(st.sampled_from(["model", "checkpoint"]),
       st.sampled_from(["truncate", "flip", "flip", "flip_many", "append", "garbage", "empty", "intact", "crafted"]),
       st.integers(0, 2**31), st.integers(0, 255), st.integers(1, 8),
       st.sampled_from(["meta_not_json", "meta_list", "config_not_dict", "config_extra", "config_bad",
                        "step_negative", "step_str", "history_bad", "params_nan", "exp_avg_shape", "drop_exp_avg"]))
def fuzz_files(kind, how, pos, value, length, edit):
    note_case(kind=kind, how=how, pos=pos, value=value, length=length, edit=edit)
    files = _originals()
    path = _workdir() / f"fuzzed_{kind}.npz"
    data = _crafted(kind, edit, files) if how == "crafted" else _damage(
        files["model_bytes" if kind == "model" else "ck_bytes"], how, pos, value, length)
    path.write_bytes(data)
    if kind == "model":
        original = files["model"]
        try:
            loaded = sf.load(path)
        except Exception as err:
            assert isinstance(err, ValueError), f"sf.load raised {type(err).__name__}, not ValueError: {err}"
            check_error(err, [path.name], "sf.load")
            outcome(f"model {how}: refused")
            return
        if how == "crafted" and edit == "params_nan":
            raise AssertionError("sf.load accepted NaN parameters")
        assert loaded.config == original.config and np.array_equal(loaded.flat, original.flat), \
            "a damaged model file loaded different parameters"
        outcome(f"model {how}: loaded")
        return
    trainer = _make_trainer()
    before = (trainer.model.flat.copy(), trainer.optimizer.state_dict(), trainer.step_count, trainer.status)
    saved = files["trainer"]
    try:
        trainer.load_checkpoint(path)
    except Exception as err:
        now = (trainer.model.flat, trainer.optimizer.state_dict(), trainer.step_count, trainer.status)
        unchanged = np.array_equal(now[0], before[0]) and np.array_equal(now[1]["exp_avg"], before[1]["exp_avg"]) \
            and now[2] == before[2] and now[3] == before[3]
        assert unchanged, f"a failing load_checkpoint changed the trainer ({how} {edit if how == 'crafted' else ''})"
        assert isinstance(err, sf.CheckpointError), f"load_checkpoint raised {type(err).__name__}: {err}"
        check_error(err, [path.name], "load_checkpoint")
        outcome(f"checkpoint {how}: refused")
        return
    assert how != "crafted" or edit not in ("params_nan", "step_negative", "step_str", "history_bad",
                                            "exp_avg_shape", "drop_exp_avg", "meta_not_json", "meta_list"), \
        f"load_checkpoint accepted a crafted bad checkpoint ({edit})"
    assert np.array_equal(trainer.model.flat, saved.model.flat), "a damaged checkpoint loaded other parameters"
    assert trainer.step_count == saved.step_count
    assert np.array_equal(trainer.optimizer.state_dict()["exp_avg"], saved.optimizer.state_dict()["exp_avg"])
    outcome(f"checkpoint {how}: loaded")


# ================================================================================================
# pytest side
# ================================================================================================

TARGETS = ["fuzz_table_analysis", "fuzz_model_analysis", "fuzz_targets", "fuzz_files"]


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    return R.run_fuzz_targets(Path(__file__), TARGETS, tmp_path_factory.mktemp("fuzz_analysis"))


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz(fuzz_results, name):
    R.check_result(name, fuzz_results[name])
