"""The model function's Fourier spectrum (sensiformer.spectrum, Measure(spectrum=True)): exact against a
brute-force transform, Monte-Carlo against exact within its error bars, history columns, determinism and
bad input."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import spectrum
from sensiformer.targets import Majority, Parity, SparseParity


def all_inputs(n):
    """(2^n, n) every input, x_1 the most significant bit of the row index (written out, not the package's)."""
    idx = np.arange(2**n)
    return ((idx[:, None] >> (n - 1 - np.arange(n))[None, :]) & 1).astype(np.uint8)


def brute_force(values, n):
    """Degree weights, the real-valued average sensitivity (flips) of values given on +-1 scale: the full
    character matrix, no FWHT."""
    x = all_inputs(n)
    chi = (-1.0) ** ((x @ x.T) % 2)  # chi_S(x) with S the 0/1 row of x: (-1)^{|S & x|}
    coef = chi @ values / 2**n
    degree = x.sum(axis=1)
    weights = np.bincount(degree, weights=coef**2, minlength=n + 1)
    flips = sum(np.mean((values - values[np.arange(2**n) ^ (1 << (n - 1 - i))]) ** 2) / 4 for i in range(n))
    return weights, flips


@pytest.mark.parametrize("scale", ["01", "pm1"])
def test_exact_spectrum_equals_the_brute_force_transform_of_the_model_outputs(random_model, scale):
    n = 6
    model = random_model(seed=3, n_positions=n, d_model=16)
    out = model.forward(all_inputs(n)).astype(np.float64)
    g = 1 - 2 * out if scale == "01" else out
    weights, as_real = brute_force(g, n)
    est = spectrum.model_spectrum(model, n, scale=scale)
    assert est.exact and est.n_samples == 2**n and not est.weights_stderr.any()
    np.testing.assert_allclose(est.weights, weights, rtol=1e-10, atol=1e-13)
    assert est.weights.sum() == pytest.approx(np.mean(g**2), rel=1e-12), "Parseval: the weights sum to E[g^2]"
    assert weights[1:].sum() > 1e-3, "a model whose spectrum is not all at degree 0"
    assert est.as_real == pytest.approx(as_real, rel=1e-10)
    assert est.as_real == pytest.approx(np.dot(np.arange(n + 1), weights), rel=1e-10)
    labels = (out > (0.5 if scale == "01" else 0.0)).astype(float)
    assert est.as_thresholded == pytest.approx(brute_force(1 - 2 * labels, n)[1], rel=1e-12)


def test_krawtchouk_rows_are_the_character_sums():
    n = 7
    x = all_inputs(n)
    chi = (-1.0) ** ((x @ x.T) % 2)
    degree = x.sum(axis=1)
    K = spectrum.krawtchouk(n)
    for k in range(n + 1):
        sums = chi[degree == k].sum(axis=0)  # sum over |S| = k of chi_S(z), for every z
        np.testing.assert_array_equal(sums, K[k, degree])


class Tabulated:
    """A stand-in with a model's forward: a target's {0,1} values, to test the estimator on known spectra."""

    def __init__(self, target):
        self.target = target

    def forward(self, x, n_threads=None):
        return self.target(x)


def test_monte_carlo_weights_are_unbiased_on_known_spectra():
    n = 9
    w, se = spectrum._monte_carlo_weights(Tabulated(Parity(n)), n, 200, 0, "01", None)
    np.testing.assert_allclose(w[1:n], 0, atol=1e-12)  # g(x) g(x xor z) depends on |z| only: no noise there
    assert abs(w[n] - 1) < 4 * se[n] and se[n] < 0.01  # only the centring's noise
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    target = Majority(n)
    exact = sf.analysis.degree_spectrum(target.truth_table())
    w, se = spectrum._monte_carlo_weights(Tabulated(target), n, 4000, 1, "01", None)
    assert w.sum() == pytest.approx(1.0, abs=1e-12), "Parseval sample by sample: g(x)^2 = 1 for a Boolean g"
    assert np.all(np.abs(w - exact) < 4 * se + 1e-12), (w - exact) / se
    sparse = SparseParity(n, [1, 4, 6])
    w, se = spectrum._monte_carlo_weights(Tabulated(sparse), n, 4000, 2, "01", None)
    assert np.all(np.abs(w - np.eye(n + 1)[3]) < 4 * se + 1e-12)


def test_monte_carlo_model_spectrum_agrees_with_exact_within_its_error_bars(random_model):
    n = 10
    model = random_model(seed=5, n_positions=n, d_model=16)
    exact = spectrum.model_spectrum(model, n)
    mc = spectrum.model_spectrum(model, n, exact=False, samples=3000, seed=4)
    assert not mc.exact and mc.n_samples == 3000 and (mc.weights_stderr > 0).all()
    z = (mc.weights - exact.weights) / mc.weights_stderr
    assert np.all(np.abs(z) < 4.5), z  # 11 degrees: |z| > 4.5 by chance has probability < 1e-4
    assert abs(mc.as_real - exact.as_real) < 4.5 * mc.as_real_stderr
    assert abs(mc.as_thresholded - exact.as_thresholded) < 4.5 * mc.as_thresholded_stderr + 1e-12
    again = spectrum.model_spectrum(model, n, exact=False, samples=3000, seed=4)
    np.testing.assert_array_equal(again.weights, mc.weights)
    other = spectrum.model_spectrum(model, n, exact=False, samples=3000, seed=5)
    assert not np.array_equal(other.weights, mc.weights), "the seed chooses the inputs"


def test_beyond_n_20_the_default_is_monte_carlo_and_exact_is_refused_naming_it():
    model = sf.Transformer(22, d_model=8, seed=0)
    est = spectrum.model_spectrum(model, 22, samples=16)
    assert not est.exact and est.weights.shape == (23,) and (est.weights_stderr > 0).any()
    with pytest.raises(ValueError, match=r"exact=True.*n=22.*exact limit of 20"):
        spectrum.model_spectrum(model, 22, exact=True)
    with pytest.raises(ValueError, match="spectrum_exact"):
        sf.Trainer(model, Parity(22), batch_size=8).fit(1, callbacks=[sf.Measure(every=1, spectrum=True,
                                                                                  spectrum_exact=True,
                                                                                  sharpness=False)],
                                                        progress=False)


def test_spectrum_columns_in_the_history_and_the_same_seed_gives_the_same_values():
    n = 6

    def run(**options):
        model = sf.Transformer(n, d_model=16, seed=1)
        trainer = sf.Trainer(model, Parity(n), batch_size=32, seed=2)
        history = trainer.fit(60, log_every=20, progress=False,
                              callbacks=[sf.Measure(every=20, spectrum=True, repeats=2, **options)])
        return history.dropna(subset=["fourier_weight_0"]), model

    hist, model = run()
    assert list(hist["step"]) == [20, 40, 60]
    columns = [f"fourier_weight_{k}" for k in range(n + 1)] + ["model_as", "model_as_real"]
    for col in columns:
        assert col in hist and f"{col}_stderr" in hist and hist[col].notna().all(), col
    assert (hist[[c + "_stderr" for c in columns]] == 0).all().all(), "n <= 20: exact"
    last = spectrum.model_spectrum(model, n)
    np.testing.assert_allclose(hist.iloc[-1][columns[:-2]].to_numpy(float), last.weights, rtol=1e-12)
    again, _ = run()
    np.testing.assert_array_equal(again[columns].to_numpy(), hist[columns].to_numpy())
    mc, _ = run(spectrum_exact=False, spectrum_samples=50)
    mc_again, _ = run(spectrum_exact=False, spectrum_samples=50)
    assert (mc["fourier_weight_1_stderr"] > 0).all()
    np.testing.assert_array_equal(mc[columns].to_numpy(), mc_again[columns].to_numpy())


def test_pm1_labels_are_analysed_on_their_own_scale():
    n = 5
    model = sf.Transformer(n, d_model=16, seed=0)
    trainer = sf.Trainer(model, Parity(n), batch_size=32, seed=0, labels="pm1")
    hist = trainer.fit(20, log_every=20, progress=False, callbacks=[sf.Measure(every=20, spectrum=True, repeats=2)])
    est = spectrum.model_spectrum(model, n, scale="pm1")
    assert hist["model_as_real"].iloc[-1] == est.as_real
    assert hist["fourier_weight_0"].iloc[-1] == est.weights[0]
    assert est.weights[0] != spectrum.model_spectrum(model, n, scale="01").weights[0]


@pytest.mark.parametrize("options, error, name", [
    (dict(spectrum="yes"), TypeError, "spectrum"),
    (dict(spectrum=True, spectrum_samples=1), ValueError, "spectrum_samples"),
    (dict(spectrum=True, spectrum_samples=2.5), TypeError, "spectrum_samples"),
    (dict(spectrum=True, spectrum_exact="no"), TypeError, "spectrum_exact"),
])
def test_bad_measure_options_name_the_argument(options, error, name):
    with pytest.raises(error, match=name):
        sf.Measure(**options)


def test_bad_model_spectrum_arguments_name_the_argument():
    model = sf.Transformer(6, d_model=8, seed=0)
    with pytest.raises(ValueError, match="n must be <= 6"):
        spectrum.model_spectrum(model, 7)
    with pytest.raises(ValueError, match="scale"):
        spectrum.model_spectrum(model, 6, scale="+-1")
    with pytest.raises(ValueError, match="samples"):
        spectrum.model_spectrum(model, 6, exact=False, samples=1)
    with pytest.raises(TypeError, match="exact"):
        spectrum.model_spectrum(model, 6, exact=1)
    with pytest.raises(TypeError, match="model must be an encoder"):
        spectrum.model_spectrum(sf.Seq2SeqTransformer(6, d_model=8, seed=0), 6)


def test_a_model_with_non_finite_parameters_is_refused_naming_the_tensor():
    model = sf.Transformer(5, d_model=8, seed=0)
    model.parameters()["linear_head.weight"][0, 0] = np.nan
    for exact in (True, False):
        with pytest.raises(sf.NonFiniteParametersError, match="linear_head.weight"):
            spectrum.model_spectrum(model, 5, exact=exact)


def test_spectrum_of_a_seq2seq_model_is_refused_by_measure():
    model = sf.Seq2SeqTransformer(4, d_model=8, seed=0)
    trainer = sf.Trainer(model, sf.targets.Prefix(Parity(4)), batch_size=8, seed=0)
    with pytest.raises(ValueError, match="spectrum=True needs an encoder Transformer"):
        trainer.fit(2, log_every=1, progress=False, callbacks=[sf.Measure(every=1, spectrum=True, repeats=2)])


def test_a_sweep_run_can_measure_the_final_spectrum():
    """RunConfig(final=FinalMeasurement(spectrum=True)) adds the trained model's spectrum to the final measurement: the
    weights of the real-valued output on the trainer's scale, equal to model_spectrum of that model;
    the default leaves the run's key and other metrics alone; the scratchpad model refuses it."""
    import dataclasses

    from sensiformer.sweep import FinalMeasurement, RunConfig, execute
    from sensiformer.sweep.runner import _build

    base = RunConfig(target="parity", n=6, seed=1, d_model=16, batch_size=32, steps=40, log_every=20, eval_batches=2,
                     final=FinalMeasurement(batches=2))
    with_spectrum = dataclasses.replace(base, final=FinalMeasurement(batches=2, spectrum=True))
    assert with_spectrum.key != base.key and "final_spectrum" not in base.hashed_fields()
    plain, measured = execute(base)["metrics"], execute(with_spectrum)["metrics"]
    assert not any(k.startswith("fourier_weight") for k in plain)
    for k in ("measure_loss", "sharpness", "param_norm"):
        assert measured[k] == plain[k]
    # the same training by hand: the model the run measured
    model, _, trainer, _ = _build(with_spectrum, 1)
    trainer.fit(with_spectrum.steps, log_every=with_spectrum.log_every, progress=False)
    ref = sf.spectrum.model_spectrum(model, 6, scale=trainer.labels)
    for k in range(7):
        assert measured[f"fourier_weight_{k}"] == pytest.approx(float(ref.weights[k]), rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="final_spectrum"):
        RunConfig(target="parity", n=4, model="scratchpad", final=FinalMeasurement(spectrum=True))
