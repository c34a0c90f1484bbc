"""The Fourier spectrum of the function a model computes: weight per degree and average sensitivity.

``model_spectrum(model, n)`` gives, on the +-1 scale (``g = 1 - 2f`` for a model trained on {0,1}
labels, as ``sensiformer.analysis``):

* ``weights[k] = sum_{|S| = k} g^(S)^2`` for k = 0..n, the Fourier weight per degree of the real-valued
  output (they sum to ``E[g^2]``, Parseval);
* ``as_real = sum_S |S| g^(S)^2``, the average sensitivity of the real-valued output;
* ``as_thresholded``: the average sensitivity of the Boolean function the model's predictions compute
  (``out > 0.5`` on {0,1} labels, ``out > 0`` on +-1 labels).

Exact (the C FWHT over all 2^n inputs) for n <= ``EXACT_MAX_N``; beyond it Monte-Carlo with standard
errors. The Monte-Carlo weights use the autocorrelation by Hamming distance: with x uniform and, for each
distance d = 0..n, a partner x xor z_d at distance d,

    W_k = sum_d P(d) K_k(d) E[g(x) g(x xor z_d)],    P(d) = C(n, d) / 2^n,

where K_k is the Krawtchouk polynomial (``sum_{|S|=k} chi_S(z)`` at |z| = d). Each sampled x gives an
unbiased estimate of every W_k from its n + 1 partners (for k >= 1 with the output centred at the other
samples' mean, which a constant cannot bias and which removes the output's offset from the variance), and
degree 0 takes the rest of g(x)^2, so the estimated weights obey Parseval sample by sample. The standard
errors are those of the per-sample estimates; they grow at middle degrees for large n (the Krawtchouk
values grow like sqrt(C(n, k))), so read them before reading a middle degree's weight. The average
sensitivities come from ``analysis.estimate_sensitivity`` (every flip of each sampled input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import analysis
from ._validation import check_bool, check_choice, check_int, check_seed
from .model import FORWARD_TOKENS, Transformer
from .targets import SCALES, binarize, to_pm1

EXACT_MAX_N = 20  #: the largest n measured exactly by default (2^20 forward passes)
DEFAULT_SAMPLES = 1024  #: Monte-Carlo inputs (each with n + 1 partners for the weights)
_STREAM = 0x5BEC_7A00  # keeps the spectrum's inputs apart from estimate_sensitivity's stream of the same seed


@dataclass(frozen=True)
class SpectrumEstimate:
    """The degree spectrum and average sensitivities of a model's function (see the module docstring).

    ``*_stderr`` are zeros when ``exact``; ``n_samples`` is 2^n when exact, else the Monte-Carlo inputs.
    """

    n: int
    exact: bool
    n_samples: int
    weights: np.ndarray = field(repr=False)
    weights_stderr: np.ndarray = field(repr=False)
    as_real: float = 0.0
    as_real_stderr: float = 0.0
    as_thresholded: float = 0.0
    as_thresholded_stderr: float = 0.0

    def columns(self) -> dict:
        """History/store columns: ``model_as``, ``model_as_real``, ``fourier_weight_0 .. _n`` and their
        ``*_stderr``."""
        row = dict(model_as=self.as_thresholded, model_as_stderr=self.as_thresholded_stderr,
                   model_as_real=self.as_real, model_as_real_stderr=self.as_real_stderr)
        for k, (w, se) in enumerate(zip(self.weights, self.weights_stderr)):
            row[f"fourier_weight_{k}"] = float(w)
            row[f"fourier_weight_{k}_stderr"] = float(se)
        return row


def krawtchouk(n: int) -> np.ndarray:
    """``K[k, d] = sum_j (-1)^j C(d, j) C(n - d, k - j)``: the sum of chi_S(z) over |S| = k at |z| = d."""
    n = check_int(n, "n", 1)
    table = np.empty((n + 1, n + 1))
    for d in range(n + 1):  # coefficients of (1 - t)^d (1 + t)^(n - d), in exact integers
        poly = [1]
        for sign in [-1] * d + [1] * (n - d):
            poly = [a + sign * b for a, b in zip(poly + [0], [0] + poly)]
        table[:, d] = poly
    return table


def _forward(model, x, n_threads):
    """The model's outputs on many rows, in chunks of the engine's token budget."""
    rows = max(1, FORWARD_TOKENS // x.shape[1])
    return np.concatenate([np.asarray(model.forward(x[i:i + rows], n_threads=n_threads), dtype=np.float64)
                           for i in range(0, len(x), rows)])


def _partners(n, samples, seed):
    """(samples, n + 1, n) inputs: row d of sample i is x_i with d random bits flipped (d = 0: x_i)."""
    rng = np.random.default_rng([seed, _STREAM, n])
    x = rng.integers(0, 2, size=(samples, n), dtype=np.uint8)
    rank = np.argsort(rng.random((samples, n)), axis=1)  # a random order of the positions per sample
    flips = (rank[:, None, :] < np.arange(n + 1)[None, :, None]).astype(np.uint8)  # the first d in that order
    return x[:, None, :] ^ flips


def _monte_carlo_weights(model, n, samples, seed, scale, n_threads):
    """Per-degree weights and standard errors from the distance-stratified pairs (module docstring)."""
    batch = _partners(n, samples, seed)
    out = _forward(model, batch.reshape(-1, n), n_threads).reshape(samples, n + 1)
    g = to_pm1(out) if scale == "01" else out
    # Degrees >= 1 do not see a constant: centring each sample at the mean of the *other* samples' outputs
    # keeps its estimate unbiased and removes the output's offset from the variance (large at init).
    h = g - ((g[:, 0].sum() - g[:, 0]) / (samples - 1))[:, None]
    prob = np.array([math.comb(n, d) for d in range(n + 1)], dtype=np.float64) / 2.0**n
    per_sample = h[:, :1] * (h @ (krawtchouk(n)[1:] * prob[None, :]).T)  # (samples, n): degrees 1..n
    # degree 0 takes the rest of g(x)^2, so the weights of every sample sum to its g(x)^2 (Parseval)
    per_sample = np.column_stack([g[:, 0] ** 2 - per_sample.sum(axis=1), per_sample])
    return per_sample.mean(axis=0), per_sample.std(axis=0, ddof=1) / math.sqrt(samples)


def model_spectrum(model: Transformer, n: int, *, exact: bool | None = None, samples: int = DEFAULT_SAMPLES,
                   seed: int = 0, scale: str = "01", n_threads: int | None = None) -> SpectrumEstimate:
    """Fourier weight per degree and average sensitivity (real-valued and thresholded) of a model.

    Parameters
    ----------
    model : Transformer
        An encoder ``Transformer`` (one output per input); a ``Seq2SeqTransformer`` is refused.
    n : int
        Input length (<= the model's n_positions).
    exact : bool, optional
        None (default): exact for n <= 20, Monte-Carlo beyond. True: enumerate all 2^n inputs
        (n <= 20 here; ``analysis`` goes to 26 when you need it). False: Monte-Carlo at any n.
    samples : int
        Monte-Carlo inputs (>= 2); the model sees ``samples * (n + 1)`` rows for the weights and as many
        for each average sensitivity. Ignored when exact.
    seed : int
        The Monte-Carlo inputs depend only on (seed, n).
    scale : {"01", "pm1"}
        The model's label scale: "01" analyses ``1 - 2 out`` and thresholds at 0.5, "pm1" analyses the
        output itself and thresholds at 0.
    n_threads : int, optional
    """
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be an encoder sensiformer.Transformer (one output per input), got "
                        f"{type(model).__name__}; a Seq2SeqTransformer's output sequence has no spectrum here")
    n = check_int(n, "n", 1, model.n_positions)
    check_choice(scale, "scale", SCALES)
    samples = check_int(samples, "samples", 2)
    seed = check_seed(seed)
    if exact is None:
        exact = n <= EXACT_MAX_N
    elif check_bool(exact, "exact") and n > EXACT_MAX_N:
        raise ValueError(f"exact=True enumerates 2**n inputs, and n={n} is beyond the spectrum's exact limit of "
                         f"{EXACT_MAX_N}; pass exact=False or None (Monte-Carlo with standard errors)")
    threshold = 0.5 if scale == "01" else 0.0
    model.require_finite("the model's spectrum")  # NaN weights would otherwise come out as NaN columns
    if exact:
        table = analysis.truth_table(model, n, n_threads=n_threads)
        weights = analysis.degree_spectrum(table, scale=scale, n_threads=n_threads)
        zeros = np.zeros(n + 1)
        return SpectrumEstimate(n, True, 2**n, weights, zeros,
                                as_real=analysis.average_sensitivity(table, scale=scale, n_threads=n_threads),
                                as_thresholded=analysis.average_sensitivity(binarize(table, threshold=threshold),
                                                                            n_threads=n_threads))
    weights, stderr = _monte_carlo_weights(model, n, samples, seed, scale, n_threads)
    real = analysis.estimate_sensitivity(model, n, samples=samples, seed=seed, scale=scale, n_threads=n_threads)
    thresholded = analysis.estimate_sensitivity(model, n, samples=samples, seed=seed, threshold=threshold, n_threads=n_threads)
    return SpectrumEstimate(n, False, samples, weights, stderr, as_real=real.value, as_real_stderr=real.stderr,
                            as_thresholded=thresholded.value, as_thresholded_stderr=thresholded.stderr)
