"""Hypothesis fuzzing of sensiformer.spectrum.model_spectrum and Measure's spectrum options.

Valid calls are checked against ``analysis`` on the model's truth table (exact) or against the
estimator's invariants (Monte-Carlo); invalid ones must raise an expected exception naming the argument,
and no call may change the model. The targets run in a crash-isolating child (tests/test_fuzz_runner.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sf_fuzz_runner as R  # registered by conftest.py (pytest) or the fuzzing child

note_case, outcome, check_error, fuzz_settings, is_int = R.note_case, R.outcome, R.check_error, R.fuzz_settings, R.is_int

import sensiformer as sf  # noqa: E402
from sensiformer import analysis, spectrum  # noqa: E402

R.setup_child(__name__)

S = R.strategies()
MODELS = st.sampled_from([("transformer", 4, "float64"), ("transformer", 6, "float32"), ("transformer", 22, "float32"),
                          ("seq2seq", 4, "float32"), ("target", 4, None), ("junk", None, None)])
FUZZY_N = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 21, 22, 23, 0, -1, 2.0, True, "4", None, 2**70])
VALID_KWARGS = st.fixed_dictionaries({}, optional={
    "exact": st.sampled_from([None, False]),
    "samples": st.sampled_from([2, 3, 17, 64]),
    "seed": st.sampled_from([0, 7, 2**64 - 1]),
    "scale": st.sampled_from(["01", "pm1"]),
    "n_threads": st.sampled_from([None, 1])})
FUZZY_KWARGS = st.fixed_dictionaries({}, optional={
    "exact": st.sampled_from([None, True, False, "yes", 1]),
    "samples": st.sampled_from([2, 17, 1, 0, -3, 2.5, None]),
    "seed": st.sampled_from([0, 2**64 - 1, -1, 2**64, 1.0]),
    "scale": st.sampled_from(["01", "pm1", "bad", None]),
    "n_threads": st.sampled_from([None, 1, 0, "1"])})


@st.composite
def spectrum_case(draw):
    """Two in three: a Transformer, an n it takes and valid options; else anything."""
    if draw(st.integers(0, 2)):
        spec = draw(st.sampled_from([("transformer", 4, "float64"), ("transformer", 6, "float32"),
                                     ("transformer", 22, "float32")]))
        return spec, draw(st.integers(1, spec[1])), draw(VALID_KWARGS)
    return draw(MODELS), draw(FUZZY_N), draw(S["mix"]((1, VALID_KWARGS), (2, FUZZY_KWARGS)))


def _build(spec):
    kind, n_positions, dtype = spec
    if kind == "transformer":
        return sf.Transformer(n_positions, d_model=8, seed=3, dtype=dtype)
    if kind == "seq2seq":
        return sf.Seq2SeqTransformer(n_positions, d_model=8, seed=3)
    if kind == "target":
        return sf.targets.Parity(n_positions)
    return "not a model"


@fuzz_settings(300)
@given(spectrum_case())
def fuzz_model_spectrum(case):
    spec, n, kwargs = case
    note_case(spec=spec, n=n, kwargs=kwargs)
    model = _build(spec)
    params = model.flat.copy() if hasattr(model, "flat") else None
    try:
        est = spectrum.model_spectrum(model, n, **kwargs)
    except Exception as err:
        check_error(err, ["model", "n", "exact", "samples", "seed", "scale", "n_threads"], "model_spectrum")
        outcome("refused")
        return
    finally:
        if params is not None:
            assert np.array_equal(model.flat, params), "model_spectrum changed the model's parameters"
    assert spec[0] == "transformer" and is_int(n) and 1 <= n <= spec[1]
    outcome("exact" if est.exact else "monte-carlo")
    assert est.weights.shape == est.weights_stderr.shape == (n + 1,) and est.n == n
    assert np.all(np.isfinite(est.weights)) and np.all(est.weights_stderr >= 0)
    scale = kwargs.get("scale", "01")
    if est.exact:
        table = analysis.truth_table(model, n)
        g = 1 - 2 * table if scale == "01" else table
        np.testing.assert_allclose(est.weights, analysis.degree_spectrum(table, scale=scale), rtol=1e-12, atol=0)
        assert math.isclose(est.weights.sum(), float(np.mean(g**2)), rel_tol=1e-9)
        assert not est.weights_stderr.any() and est.n_samples == 2**n
        assert 0 <= est.as_thresholded <= n and est.as_thresholded * 2**n == pytest.approx(round(est.as_thresholded
                                                                                                  * 2**n))
    else:
        assert est.n_samples == kwargs.get("samples", spectrum.DEFAULT_SAMPLES)
        assert 0 <= est.as_thresholded <= n and est.as_real >= 0
        again = spectrum.model_spectrum(model, n, **kwargs)
        assert np.array_equal(again.weights, est.weights), "the Monte-Carlo inputs depend on the seed only"


@fuzz_settings(200)
@given(st.fixed_dictionaries({}, optional={
    "spectrum": st.sampled_from([True, False, "yes", 1, None]),
    "spectrum_samples": st.sampled_from([2, 64, 1, 0, 2.0, "8", None]),
    "spectrum_exact": st.sampled_from([None, True, False, "no", 0])}))
def fuzz_measure_spectrum_options(kwargs):
    note_case(kwargs=kwargs)
    try:
        probe = sf.Measure(every=5, sharpness=False, blowup=False, norm=False, **kwargs)
    except Exception as err:
        check_error(err, ["spectrum", "spectrum_samples", "spectrum_exact"], "Measure")
        outcome("refused")
        return
    outcome("accepted")
    assert ("spectrum" in probe.metrics) == bool(kwargs.get("spectrum", False))


TARGETS = ["fuzz_model_spectrum", "fuzz_measure_spectrum_options"]


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    return R.run_fuzz_targets(Path(__file__), TARGETS, tmp_path_factory.mktemp("fuzz_spectrum"))


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz(fuzz_results, name):
    R.check_result(name, fuzz_results[name])
