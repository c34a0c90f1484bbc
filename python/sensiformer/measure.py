"""Probes during training: the paper's "dynamic" curves from one ``Trainer.fit`` call."""

from __future__ import annotations

import numpy as np

from . import probes, spectrum as _spectrum
from ._validation import check_bool, check_float, check_int, check_seed
from .metrics import METRICS, Settings, measure
from .trainer import Callback

_MEASURE_STREAM = 0x3EA5_0E5E  # keeps measurement batches apart from training batches


class Measure(Callback):
    """Every ``every`` steps, probe the model on fixed measurement batches.

    The history rows at those steps get ``measure_loss``, ``sharpness`` and
    ``sharpness_stderr`` (same noise draws at every measurement: common random numbers over
    training, as the official dynamic runs re-seed), the LayerNorm blowup aggregates
    (``blowup_maxs_prod`` etc.) and ``param_norm`` (positional embeddings excluded); optionally
    the Hessian's top eigenvalue and Hutchinson trace (``hessian_top``, ``hessian_trace`` and
    ``hessian_trace_stderr``; same probe vectors at every measurement) and the attention-logit
    scale (``logit_max``: max over layers and heads, ``logit_mean``: mean of the per-head means); optionally
    the model function's Fourier spectrum (``spectrum=True``): ``fourier_weight_0 .. fourier_weight_n`` (the
    weight per degree of the real-valued output on the +-1 scale, summing to E[g^2]), ``model_as`` (the
    average sensitivity of the thresholded predictions) and ``model_as_real`` (of the real-valued output),
    each with its ``*_stderr``: exact (stderr 0) for n <= 20, Monte-Carlo beyond (``sensiformer.spectrum``).

    For a ``Seq2SeqTransformer`` the losses are teacher-forced, the blowup is reported per stack
    (``blowup_encoder_maxs_prod``, ``blowup_decoder_maxs_prod``, ..., and the official subset as
    ``blowup_official_encoder_maxs_prod`` etc.), and the rows also get ``autoregressive_accuracy``
    (per token) and ``sequence_accuracy``; the Hessian probes use the teacher-forced loss and the
    logit scale covers every attention module (encoder, decoder self- and cross-attention).

    Parameters
    ----------
    x, y : arrays, optional
        Measurement inputs and labels (on the trainer's label scale). Default: ``n_batches``
        batches drawn once from the trainer's input distribution.
    every : int
    n_batches : int
        Number of measurement batches (of the trainer's batch size) when x is not given.
    sharpness, blowup, norm : bool
        Which probes to run.
    sigma, repeats, seed : sharpness settings (the paper's dynamic runs use R=500).
    definition : {"official", "theory"}
        LayerNorm blowup form.
    hessian : bool
        Also measure the Hessian (on the sharpness parameter set): top eigenvalue by Lanczos
        (``hessian_iters`` steps at most) and the trace from ``hessian_samples`` probes.
    logit_scale : bool
        Also measure the attention-logit scale |q.k|/sqrt(d_head).
    spectrum : bool
        Also measure the Fourier spectrum and average sensitivity of the model's function (encoder
        ``Transformer`` only), on the measurement data's length n.
    spectrum_samples : int
        Monte-Carlo inputs of the spectrum beyond n = 20 (the same inputs at every measurement).
    spectrum_exact : bool, optional
        None: exact for n <= 20, Monte-Carlo beyond; True: exact (n <= 20); False: Monte-Carlo.
    metrics : sequence of str, optional
        The metrics to run, by name in ``sensiformer.metrics.METRICS`` (your own registered ones
        too), instead of the flags above; ``metric_settings`` go to user metrics as ``settings.extra``.
    """

    def __init__(self, x=None, y=None, *, every=100, n_batches=1, sharpness=True, blowup=True, norm=True,
                 sigma=probes.DEFAULT_SIGMA, repeats=10, seed=0, definition="official", hessian=False,
                 hessian_samples=20, hessian_iters=30, logit_scale=False, metrics=None, metric_settings=None,
                 spectrum=False, spectrum_samples=_spectrum.DEFAULT_SAMPLES, spectrum_exact=None):
        super().__init__(every=every)
        if (x is None) != (y is None):
            raise ValueError("give both x and y, or neither")
        self.x, self.y = x, y
        self.n_batches = check_int(n_batches, "n_batches", 1)
        if metrics is None:
            flags = dict(sharpness=sharpness, blowup=blowup, param_norm=norm, hessian=hessian,
                         logit_scale=logit_scale, spectrum=check_bool(spectrum, "spectrum"))
            metrics = ["loss"] + [name for name, on in flags.items() if on]
        elif isinstance(metrics, str) or any(m not in METRICS for m in metrics):
            raise ValueError(f"metrics must be names of registered metrics ({sorted(METRICS)}), got {metrics!r}")
        self.metrics = tuple(metrics)
        self.settings = dict(sigma=check_float(sigma, "sigma", 0.0), repeats=check_int(repeats, "repeats", 1),
                             seed=check_seed(seed), definition=definition,
                             hessian_samples=check_int(hessian_samples, "hessian_samples", 1),
                             hessian_iters=check_int(hessian_iters, "hessian_iters", 1),
                             spectrum_samples=check_int(spectrum_samples, "spectrum_samples", 2),
                             spectrum_exact=None if spectrum_exact is None else check_bool(spectrum_exact,
                                                                                           "spectrum_exact"),
                             extra=dict(metric_settings or {}))

    def _data(self, trainer):
        if self.x is None:
            # a stream of its own: same trainer seed, disjoint step range far beyond training
            pairs = [trainer.sample_batch(step=(1 << 62) + _MEASURE_STREAM + k) for k in range(self.n_batches)]
            x = np.concatenate([p[0] for p in pairs])
            y = np.concatenate([p[1] for p in pairs])
            self.x, self.y = x, (2 * y - 1 if trainer.labels == "pm1" else y)
        return self.x, self.y

    def _seq2seq_extras(self, trainer, x, y, row):
        """A seq2seq model: its teacher-forcing input and the autoregressive accuracies."""
        label_threshold = 0.0 if trainer.labels == "pm1" else 0.5
        bits = (np.asarray(y) > label_threshold).astype(np.uint8)
        acc = trainer.model.autoregressive_accuracy(x, bits, threshold=trainer._threshold, n_threads=trainer.n_threads)
        row.update(autoregressive_accuracy=acc["token"], sequence_accuracy=acc["sequence"])
        return dict(decoder_input=trainer.model.teacher_forcing(bits))

    def __call__(self, trainer):
        if trainer._seq2seq and "spectrum" in self.metrics:
            raise ValueError("spectrum=True needs an encoder Transformer: a Seq2SeqTransformer computes a sequence, "
                             "not one Boolean function of its input")
        x, y = self._data(trainer)
        row = {}
        seq = self._seq2seq_extras(trainer, x, y, row) if trainer._seq2seq else {}
        settings = Settings(loss=trainer.loss, labels=trainer.labels, n_threads=trainer.n_threads,
                            decoder_input=seq.get("decoder_input"),
                            batch_size=len(x) // self.n_batches if len(x) % self.n_batches == 0 else len(x),
                            **self.settings)
        row.update(measure(trainer.model, x, y, self.metrics, settings))
        return row
