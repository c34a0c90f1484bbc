"""Bad input to the analysis functions: a clear Python exception that names the argument."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import analysis as A
from sensiformer import targets as T

TABLE = np.array([0.0, 1.0, 1.0, 0.0])
TABLE_FUNCTIONS = [A.fourier, A.degree_spectrum, A.degree, A.average_sensitivity, A.influences, A.sensitivity,
                   A.sensitivity_profile, A.max_sensitivity, lambda t: A.noise_stability(t, 0.5),
                   lambda t: A.noise_sensitivity(t, 0.1), lambda t: A.average_sensitivity(t, method="fourier")]


@pytest.mark.parametrize("fn", TABLE_FUNCTIONS)
@pytest.mark.parametrize("table, error, message", [
    pytest.param(np.zeros(6), ValueError, r"truth_table must have 2\*\*n entries .* got 6", id="length 6"),
    pytest.param(np.zeros(1), ValueError, r"truth_table must have 2\*\*n entries", id="length 1"),
    pytest.param(np.zeros((4, 2)), ValueError, r"truth_table must be 1-D", id="2-D"),
    pytest.param(np.array([0.0, np.nan, 1.0, 0.0]), ValueError, r"truth_table must be finite, found nan at index 1",
                 id="NaN"),
    pytest.param(np.array([0.0, 1.0, np.inf, 0.0]), ValueError, r"truth_table must be finite", id="inf"),
    pytest.param(np.array(["0", "1", "1", "0"]), TypeError, r"truth_table must be a real numeric array", id="str"),
    pytest.param(np.zeros(4, complex), TypeError, r"truth_table must be a real numeric array", id="complex"),
    pytest.param(np.array([0, 1, None, 1], dtype=object), TypeError, r"truth_table .* dtype object", id="object"),
    pytest.param(np.broadcast_to(0.0, 2**27), ValueError, r"truth_table has 2\*\*27 entries.* n <= 26", id="n=27"),
])
def test_bad_truth_tables(fn, table, error, message):
    with pytest.raises(error, match=message):
        fn(table)


@pytest.mark.parametrize("fn", [A.sensitivity_profile, A.max_sensitivity])
def test_boolean_only_functions_refuse_other_values(fn):
    with pytest.raises(ValueError, match=r"truth_table must be Boolean \(\{0, 1\} for scale='01'\).* 0.5 at index 2"):
        fn([0.0, 1.0, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"truth_table must be Boolean \(\{-1, \+1\} for scale='pm1'\).* 0.0 at index 0"):
        fn(TABLE, scale="pm1")
    fn(T.to_pm1(TABLE), scale="pm1")  # the same function on the other scale is fine


@pytest.mark.parametrize("call, error, message", [
    (lambda: A.average_sensitivity(TABLE, scale="+-1"), ValueError, r"scale must be one of '01', 'pm1'"),
    (lambda: A.average_sensitivity(TABLE, method="matrix"), ValueError, r"method must be one of"),
    (lambda: A.noise_stability(TABLE, 1.5), ValueError, r"rho must be <= 1.0"),
    (lambda: A.noise_stability(TABLE, float("nan")), ValueError, r"rho must be finite"),
    (lambda: A.noise_sensitivity(TABLE, -0.1), ValueError, r"delta must be >= 0"),
    (lambda: A.degree(TABLE, tol=-1), ValueError, r"tol must be >= 0"),
    (lambda: A.fourier(TABLE, n_threads=0), ValueError, r"n_threads must be >= 1"),
    (lambda: A.inverse_fourier([1.0, 2.0, 3.0]), ValueError, r"coefficients must have 2\*\*n entries"),
    (lambda: A.fwht(np.zeros(4, np.float32)), TypeError, r"a must be a float64 NumPy array"),
    (lambda: A.fwht([0.0, 1.0]), TypeError, r"a must be a float64 NumPy array"),
    (lambda: A.fwht(np.zeros(8)[::2]), ValueError, r"a must be C-contiguous"),
    (lambda: A.fwht(np.zeros(6)), ValueError, r"a must have 2\*\*n entries"),
    (lambda: A.fwht(np.array([0.0, np.nan])), ValueError, r"a must be finite"),
])
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_read_only_array_cannot_be_transformed_in_place():
    a = np.zeros(4)
    a.flags.writeable = False
    with pytest.raises(ValueError, match=r"a must be C-contiguous and writeable"):
        A.fwht(a)


@pytest.fixture(scope="module")
def model():
    return sf.Transformer(8, d_model=16, seed=0)


@pytest.mark.parametrize("call, error, message", [
    (lambda m: A.truth_table(m, 9), ValueError, r"n=9 is longer than the model's n_positions=8"),
    (lambda m: A.truth_table(m, 0), ValueError, r"n must be >= 1"),
    (lambda m: A.truth_table(m, 8.0), TypeError, r"n must be an integer"),
    (lambda m: A.truth_table(m, 8, chunk_size=0), ValueError, r"chunk_size must be >= 1"),
    (lambda m: A.truth_table("model", 8), TypeError, r"model must be a sensiformer.Transformer"),
    (lambda m: A.truth_table(T.Parity(6), 8), ValueError, r"n=8 but the target Parity\(n=6\) is defined on n=6"),
    (lambda m: A.model_sensitivity(m, 8, exact="yes"), TypeError, r"exact must be a bool"),
    (lambda m: A.model_sensitivity(m, 8, threshold=float("nan")), ValueError, r"threshold must be finite"),
    (lambda m: A.model_sensitivity(m, 8, scale="01x"), ValueError, r"scale must be one of"),
    (lambda m: A.model_sensitivity(m, 8, exact=False, samples=1), ValueError, r"samples must be >= 2"),
    (lambda m: A.model_sensitivity(m, 8, exact=False, samples=10.5), TypeError, r"samples must be an integer"),
    (lambda m: A.model_sensitivity(m, 8, exact=False, seed=-1), ValueError, r"seed must be >= 0"),
    (lambda m: A.estimate_sensitivity(lambda x: x.sum(1, keepdims=True).T, 4, samples=4), ValueError,
     r"fn must return one value per row"),
    (lambda m: A.estimate_sensitivity(lambda x: np.full(len(x), np.nan), 4, samples=4), ValueError,
     r"fn returned NaN"),
    (lambda m: A.estimate_sensitivity(lambda x: x.astype(str)[:, 0], 4, samples=4), TypeError,
     r"fn must return real numbers"),
])
def test_bad_model_arguments(model, call, error, message):
    with pytest.raises(error, match=message):
        call(model)


def test_non_finite_model_outputs_are_reported(model):
    broken = model.copy()
    broken.flat[:] = np.nan
    with pytest.raises(ValueError, match=r"parameter 'embedding.weight' holds non-finite values"):
        A.model_sensitivity(broken, 8)  # refused before any forward, naming the tensor
