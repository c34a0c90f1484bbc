"""Boolean analysis against brute force at small n: the dense character matrix (O(4^n)) and flip
counting by definition, for Boolean and real tables on both scales; a model's truth table against
its forward on every input."""

import numpy as np
import pytest

from sensiformer import analysis as A
from sensiformer import targets

from ._support import encoder_case


def brute_force(table, scale):
    """Fourier coefficients, total influence, influences and s(x), each by its definition."""
    v = np.asarray(table, np.float64)
    n = v.size.bit_length() - 1
    idx = np.arange(2**n)
    both = idx[:, None] & idx[None, :]
    parity_of_and = sum((both >> b) & 1 for b in range(n)) % 2  # chi_S(x) = (-1)^|S & x|
    sizes = sum((idx >> b) & 1 for b in range(n))
    g = 1 - 2 * v if scale == "01" else v
    coef = (1.0 - 2.0 * parity_of_and) @ g / 2**n
    factor = 1.0 if scale == "01" else 0.25
    flips = np.array([(v - v[idx ^ (1 << (n - 1 - j))]) ** 2 for j in range(n)])  # flip x_{j+1}
    return dict(coef=coef, sizes=sizes, total=float(np.sum(sizes * coef**2)), influences=flips.mean(axis=1) * factor,
                point=flips.sum(axis=0) * factor, spectrum=np.bincount(sizes, coef**2, minlength=n + 1))


@pytest.mark.parametrize("n", [1, 3, 6, 8])
def test_analysis_matches_brute_force(errors, n):
    rng = np.random.default_rng(n)
    for kind, table, scale in (("boolean", rng.integers(0, 2, 2**n).astype(float), "01"),
                               ("real 01", rng.normal(size=2**n), "01"), ("real pm1", rng.normal(size=2**n), "pm1")):
        ref = brute_force(table, scale)
        errors.check(f"{kind} fourier", np.max(np.abs(A.fourier(table, scale=scale) - ref["coef"])), 1e-12)
        errors.check(f"{kind} degree spectrum",
                     np.max(np.abs(A.degree_spectrum(table, scale=scale) - ref["spectrum"])), 1e-12)
        for method in ("flips", "fourier"):
            total = A.average_sensitivity(table, scale=scale, method=method)
            errors.check(f"{kind} average sensitivity ({method})", abs(total - ref["total"]) / ref["total"], 1e-12)
        errors.check(f"{kind} influences", np.max(np.abs(A.influences(table, scale=scale) - ref["influences"])), 1e-12)
        errors.check(f"{kind} s(x)", np.max(np.abs(A.sensitivity(table, scale=scale) - ref["point"])), 1e-12)
        if kind == "boolean":
            np.testing.assert_array_equal(A.sensitivity_profile(table), np.bincount(ref["point"].astype(int),
                                                                                    minlength=n + 1))
            assert A.max_sensitivity(table) == ref["point"].max()
            nonzero = np.abs(ref["coef"]) > 1e-9
            assert A.degree(table) == (ref["sizes"][nonzero].max() if nonzero.any() else 0)


def test_closed_forms():
    assert A.average_sensitivity(targets.Parity(7).truth_table()) == 7
    assert round(A.average_sensitivity(targets.Majority(5).truth_table()), 3) == 1.875  # the paper's value
    assert A.degree(targets.First(6).truth_table()) == 1


def test_a_models_truth_table_is_its_forward_on_every_input(errors):
    model, _, _ = encoder_case("float64", seed=2, n_positions=9)
    inputs = ((np.arange(2**9)[:, None] >> np.arange(8, -1, -1)) & 1).astype(np.uint8)  # x_1 most significant
    errors.equal("truth table", A.truth_table(model, 9), model.forward(inputs))
    result = A.model_sensitivity(model, 9)
    thresholded = (model.forward(inputs) > 0.5).astype(float)
    errors.check("model sensitivity", abs(result.value - A.average_sensitivity(thresholded)), 1e-12)
