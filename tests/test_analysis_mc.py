"""Monte-Carlo sensitivity: agreement with the exact values, calibrated standard errors,
reproducibility, and the exact mode's limit."""

import math

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import analysis as A
from sensiformer import targets as T


@pytest.mark.parametrize("target, threshold", [(T.Majority(12), None), (T.RandomFunction(10, seed=3), 0.5),
                                               (T.Mean(9), None), (T.RandomDegree(11, 2, seed=1), None)])
def test_monte_carlo_is_within_4_standard_errors_of_exact(target, threshold):
    exact = A.model_sensitivity(target, target.n, threshold=threshold)
    mc = A.model_sensitivity(target, target.n, exact=False, samples=3000, seed=5, threshold=threshold)
    assert not mc.exact and mc.n_samples == 3000 and mc.samples.shape == (3000,)
    assert mc.stderr > 0
    assert abs(mc.value - exact.value) < 4 * mc.stderr + 1e-12  # MEAN: s(x) = 1/n everywhere, stderr ~ 0
    assert np.all(np.abs(mc.influences - exact.influences) < 4 * mc.influence_stderr + 1e-12)


def test_monte_carlo_of_a_model_with_raw_outputs(random_model):
    n = 8
    model = random_model(seed=6, n_positions=n, d_model=16)
    for scale in ("01", "pm1"):
        exact = A.model_sensitivity(model, n, threshold=None, scale=scale)
        mc = A.model_sensitivity(model, n, exact=False, samples=2000, seed=2, threshold=None, scale=scale, n_threads=1)
        assert abs(mc.value - exact.value) < 4 * mc.stderr


def test_standard_error_is_calibrated():
    """Over 200 independent runs, the spread of the estimates matches the reported stderr."""
    target = T.RandomFunction(10, seed=7)
    runs = [A.estimate_sensitivity(target, 10, samples=200, seed=seed) for seed in range(200)]
    values = np.array([r.value for r in runs])
    reported = np.mean([r.stderr for r in runs])
    spread = values.std(ddof=1)
    assert 1 / 1.5 < spread / reported < 1.5
    exact = A.average_sensitivity(target.truth_table())
    assert abs(values.mean() - exact) < 4 * spread / np.sqrt(len(runs))  # unbiased


def test_inputs_depend_on_seed_and_index_only():
    target = T.Majority(9)
    a = A.estimate_sensitivity(target, 9, samples=3000, seed=11)
    b = A.estimate_sensitivity(target, 9, samples=3000, seed=11, chunk_size=37)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.value == b.value and a.stderr == b.stderr
    prefix = A.estimate_sensitivity(target, 9, samples=1500, seed=11)
    np.testing.assert_array_equal(prefix.samples, a.samples[:1500])
    other = A.estimate_sensitivity(target, 9, samples=3000, seed=12)
    assert not np.array_equal(other.samples, a.samples)


def test_large_n_closed_forms():
    assert A.estimate_sensitivity(T.Parity(300), 300, samples=50).value == 300
    first = A.estimate_sensitivity(T.First(100), 100, samples=50)
    assert first.value == 1 and first.stderr == 0
    majority = A.estimate_sensitivity(T.Majority(101), 101, samples=4000, seed=1)
    expected = 101 * math.comb(100, 50) / 2**100  # odd n: s(x) = n at the 50:51 splits, else 0
    assert abs(majority.value - expected) < 4 * majority.stderr
    sparse = A.estimate_sensitivity(T.SparseParity(64, [3, 40, 63]), 64, samples=20)
    np.testing.assert_array_equal(np.flatnonzero(sparse.influences), [3, 40, 63])


def test_exact_mode_refuses_large_n_and_points_to_monte_carlo():
    model = sf.Transformer(40, d_model=16)
    with pytest.raises(ValueError, match=r"n=40 .*exact=False"):
        A.model_sensitivity(model, 40)
    with pytest.raises(ValueError, match=r"n=30 .*Monte-Carlo"):
        A.truth_table(model, 30)
    with pytest.raises(ValueError, match=r"samples applies to the Monte-Carlo mode"):
        A.model_sensitivity(model, 8, samples=100)
    estimate = A.model_sensitivity(model, 40, exact=False, samples=4, seed=0)
    assert estimate.n_samples == 4 and np.isfinite(estimate.value)
