"""Exact Boolean analysis of truth tables: closed forms, identities, the O(4^n) reference, threads."""

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import sensiformer as sf
from sensiformer import analysis as A
from sensiformer import targets as T


# ---- the naive reference: the official code's dense character matrix, O(4^n) ---------------------

@lru_cache(maxsize=None)
def characters(n):
    """chi[S, x] = (-1)^popcount(S & x) and |S|, by brute force."""
    idx = np.arange(2**n)
    both = idx[:, None] & idx[None, :]
    popcount = np.zeros_like(both)
    for b in range(n):
        popcount += (both >> b) & 1
    sizes = np.array([bin(i).count("1") for i in idx])
    return (-1.0) ** popcount, sizes


def naive(table, scale="01"):
    """Coefficients, as_n via Fourier, as_n by flip counting, influences and s(x), all by definition."""
    v = np.asarray(table, dtype=np.float64)
    n = v.size.bit_length() - 1
    chi, sizes = characters(n)
    g = 1 - 2 * v if scale == "01" else v
    coef = chi @ g / 2**n
    factor = 1.0 if scale == "01" else 0.25
    idx = np.arange(2**n)
    diffs = np.array([(v - v[idx ^ (1 << (n - 1 - j))]) ** 2 for j in range(n)])  # (n, 2^n), x_{j+1}
    return dict(coef=coef, as_fourier=float(np.sum(sizes * coef**2)), influences=diffs.mean(axis=1) * factor,
                point=diffs.sum(axis=0) * factor, sizes=sizes)


boolean_tables = st.integers(1, 10).flatmap(
    lambda n: st.integers(0, 2**32 - 1).map(lambda s: np.random.default_rng(s).integers(0, 2, 2**n).astype(float)))
real_tables = st.integers(1, 10).flatmap(
    lambda n: st.integers(0, 2**32 - 1).map(lambda s: np.random.default_rng(s).normal(size=2**n)))


@given(boolean_tables)
@example(np.random.default_rng(0).integers(0, 2, 2**10).astype(float))
def test_boolean_tables_match_the_naive_reference(table):
    ref = naive(table)
    n = table.size.bit_length() - 1
    np.testing.assert_allclose(A.fourier(table), ref["coef"], atol=1e-12)
    assert A.average_sensitivity(table) == pytest.approx(ref["as_fourier"], abs=1e-10)
    assert A.average_sensitivity(table, method="fourier") == pytest.approx(ref["as_fourier"], abs=1e-10)
    np.testing.assert_allclose(A.influences(table), ref["influences"], atol=1e-12)
    np.testing.assert_array_equal(A.sensitivity(table), ref["point"])
    np.testing.assert_array_equal(A.sensitivity_profile(table),
                                  np.bincount(ref["point"].astype(int), minlength=n + 1))
    np.testing.assert_allclose(A.degree_spectrum(table), np.bincount(ref["sizes"], ref["coef"] ** 2, minlength=n + 1),
                               atol=1e-12)
    nonzero = np.abs(ref["coef"]) > 1e-9
    assert A.degree(table) == (ref["sizes"][nonzero].max() if nonzero.any() else 0)


@given(real_tables, st.sampled_from(["01", "pm1"]))
@example(np.random.default_rng(1).normal(size=2**10), "01")
def test_real_tables_match_the_naive_reference(table, scale):
    ref = naive(table, scale)
    np.testing.assert_allclose(A.fourier(table, scale=scale), ref["coef"], atol=1e-12)
    assert A.average_sensitivity(table, scale=scale) == pytest.approx(ref["as_fourier"], rel=1e-12)
    assert A.average_sensitivity(table, scale=scale, method="fourier") == pytest.approx(ref["as_fourier"], rel=1e-12)
    np.testing.assert_allclose(A.influences(table, scale=scale), ref["influences"], rtol=1e-12)
    np.testing.assert_allclose(A.sensitivity(table, scale=scale), ref["point"], rtol=1e-12)


# ---- closed forms --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["flips", "fourier"])
@pytest.mark.parametrize("n", [1, 2, 5, 9, 16])
def test_parity_first_mean(n, method):
    assert A.average_sensitivity(T.Parity(n).truth_table(), method=method) == n
    assert A.average_sensitivity(T.First(n).truth_table(), method=method) == 1
    mean = T.Mean(n)
    assert A.average_sensitivity(mean.truth_table(), method=method) == pytest.approx(1 / n, rel=1e-12)
    assert A.average_sensitivity(mean.truth_table(scale="pm1"), scale="pm1",
                                 method=method) == pytest.approx(1 / n, rel=1e-12)
    assert A.average_sensitivity(T.Parity(n).truth_table(scale="pm1"), scale="pm1", method=method) == n


@pytest.mark.parametrize("n, expected", [(4, 1.5), (5, 1.875), (10, 2.461), (15, 3.142), (20, 3.524)])
def test_majority_exact_values_from_the_paper(n, expected):
    table = T.Majority(n).truth_table()
    assert round(A.average_sensitivity(table), 3) == expected
    assert round(A.average_sensitivity(table, method="fourier"), 3) == expected


def test_majority_profile_and_max_sensitivity():
    n = 5  # s(x) = 3 where the vote is 3:2 (20 inputs), else 0
    profile = A.sensitivity_profile(T.Majority(n).truth_table())
    np.testing.assert_array_equal(profile, [12, 0, 0, 20, 0, 0])
    assert A.max_sensitivity(T.Majority(n).truth_table()) == 3
    assert A.max_sensitivity(T.Parity(7).truth_table()) == 7


def test_degrees():
    assert A.degree(T.Parity(8).truth_table()) == 8
    assert A.degree(T.First(8).truth_table()) == 1
    assert A.degree(T.Mean(8).truth_table()) == 1
    assert A.degree(T.Majority(9).truth_table()) == 9  # odd-degree coefficients all nonzero
    assert A.degree(np.zeros(16)) == 0
    assert A.degree(T.SparseParity(20, [3, 11, 19]).truth_table()) == 3


def test_noise_stability_and_sensitivity_closed_forms():
    n, rho, delta = 6, 0.3, 0.1
    assert A.noise_stability(T.Parity(n).truth_table(), rho) == pytest.approx(rho**n)
    assert A.noise_stability(T.First(n).truth_table(), rho) == pytest.approx(rho)
    assert A.noise_stability(T.First(n).truth_table(), 1.0) == pytest.approx(1.0)
    assert A.noise_sensitivity(T.First(n).truth_table(), delta) == pytest.approx(delta)
    assert A.noise_sensitivity(T.Parity(n).truth_table(), delta) == pytest.approx(0.5 - 0.5 * (1 - 2 * delta) ** n)


# ---- identities ------------------------------------------------------------------------------------

def random_table(n, seed=0, boolean=True):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, 2**n).astype(float) if boolean else rng.normal(size=2**n)


@pytest.mark.parametrize("n", [3, 12, 18])
def test_parseval_and_spectrum(n):
    for table, scale in [(random_table(n), "01"), (random_table(n, 1, False), "pm1"), (random_table(n, 2, False), "01")]:
        coef = A.fourier(table, scale=scale)
        g = 1 - 2 * table if scale == "01" else table
        assert np.sum(coef**2) == pytest.approx(np.mean(g**2), rel=1e-12)
        assert A.degree_spectrum(table, scale=scale).sum() == pytest.approx(np.mean(g**2), rel=1e-12)


@pytest.mark.parametrize("n", [1, 5, 13, 17])
def test_fwht_is_an_involution_up_to_2_to_the_n(n):
    a = random_table(n, 3, boolean=False)
    b = a.copy()
    assert A.fwht(A.fwht(b)) is b
    np.testing.assert_allclose(b, a * 2**n, rtol=1e-12, atol=1e-9)
    table = random_table(n, 4)
    np.testing.assert_array_equal(A.inverse_fourier(A.fourier(table)), table)  # exact on dyadic values


@pytest.mark.parametrize("n", [4, 11, 17])
def test_influences_sum_to_as_and_profile_sums_to_2n(n):
    table = random_table(n, 5)
    inf = A.influences(table)
    assert inf.sum() == pytest.approx(A.average_sensitivity(table, method="fourier"), rel=1e-12)
    profile = A.sensitivity_profile(table)
    assert profile.dtype == np.int64 and profile.sum() == 2**n
    assert (profile * np.arange(n + 1)).sum() / 2**n == pytest.approx(inf.sum(), rel=1e-12)
    assert A.sensitivity(table).mean() == pytest.approx(inf.sum(), rel=1e-12)
    real = random_table(n, 6, boolean=False)
    assert A.influences(real, scale="pm1").sum() == pytest.approx(A.average_sensitivity(real, scale="pm1", method="fourier"), rel=1e-10)


def test_influences_of_fourier_weights():
    """Inf_i = sum_{S containing i} g^(S)^2, with x_1 the most significant bit of S."""
    n = 7
    table = random_table(n, 7)
    coef = A.fourier(table)
    idx = np.arange(2**n)
    expected = [np.sum(coef[(idx >> (n - 1 - j)) & 1 == 1] ** 2) for j in range(n)]
    np.testing.assert_allclose(A.influences(table), expected, atol=1e-12)
    first = T.First(n).truth_table()
    np.testing.assert_array_equal(A.influences(first), np.eye(n)[0])
    assert A.fourier(first)[2 ** (n - 1)] == 1.0  # 1 - 2 x_1 is chi_{x_1} itself


def test_scales_agree_for_boolean_functions():
    table = random_table(9, 8)
    pm1 = T.to_pm1(table)
    assert A.average_sensitivity(pm1, scale="pm1") == A.average_sensitivity(table)
    np.testing.assert_array_equal(A.fourier(pm1, scale="pm1"), A.fourier(table))
    np.testing.assert_array_equal(A.sensitivity_profile(pm1, scale="pm1"), A.sensitivity_profile(table))
    np.testing.assert_array_equal(A.influences(pm1, scale="pm1"), A.influences(table))


def test_methods_agree_on_large_tables():
    table = random_table(22, 9)
    assert A.average_sensitivity(table) == pytest.approx(A.average_sensitivity(table, method="fourier"), rel=1e-13)


def test_accepts_bool_int_and_float32_tables():
    table = random_table(6, 10)
    expected = A.average_sensitivity(table)
    for converted in (table.astype(bool), table.astype(np.int8), table.astype(np.float32), list(table)):
        assert A.average_sensitivity(converted) == expected


# ---- determinism across thread counts ----------------------------------------------------------------

@pytest.mark.parametrize("boolean", [True, False])
def test_kernels_are_bitwise_identical_for_any_thread_count(boolean):
    n = 17  # above the single-thread cut-off
    table = random_table(n, 11, boolean)
    calls = {
        "fourier": lambda t: A.fourier(table, n_threads=t),
        "spectrum": lambda t: A.degree_spectrum(table, n_threads=t),
        "influences": lambda t: A.influences(table, n_threads=t),
        "sensitivity": lambda t: A.sensitivity(table, n_threads=t),
        "fwht": lambda t: A.fwht(table.copy(), n_threads=t),
    }
    if boolean:
        calls["profile"] = lambda t: A.sensitivity_profile(table, n_threads=t)
    for name, call in calls.items():
        one, two, default = call(1), call(2), call(None)
        assert one.tobytes() == two.tobytes() == default.tobytes(), name


def test_memory_limit_gives_a_clear_error():
    table = random_table(18, 12)
    sf.set_memory_limit(1 << 20)
    try:
        with pytest.raises(MemoryError, match="memory limit"):
            A.degree_spectrum(table)
        with pytest.raises(MemoryError, match="memory limit"):
            A.fourier(table)
    finally:
        sf.set_memory_limit(None)
    assert A.degree_spectrum(table).sum() == pytest.approx(1.0)
