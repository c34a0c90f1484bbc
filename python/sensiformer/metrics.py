"""Metrics of a model on fixed measurement data: one registry, used by ``Measure`` during training and by
a sweep run's final measurement, so a metric is written (and computed) the same way in both.

A metric is a function ``fn(model, x, y, settings) -> dict`` of history/store columns, registered under a
name::

    @sf.metrics.register("output_mean")
    def output_mean(model, x, y, s):
        return {"output_mean": float(model.forward(x, n_threads=s.n_threads).mean())}

    sf.Measure(every=100, metrics=("loss", "sharpness", "output_mean"))

``settings`` (``Settings``) carries the loss, the label scale, the batch size, the thread count, the seq2seq
model's decoder input (teacher forcing) and the probes' own settings (sharpness sigma/repeats/seed, blowup
definition, Hessian sample and iteration counts, the spectrum's Monte-Carlo samples and exact mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import probes, spectrum

#: name -> fn(model, x, y, settings) -> {column: value}
METRICS: dict[str, Callable] = {}


def register(name: str) -> Callable:
    """Decorator: register ``fn(model, x, y, settings) -> dict`` as metric ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a metric name must be a non-empty string, got {name!r}")

    def add(fn):
        METRICS[name] = fn
        return fn

    return add


@dataclass(frozen=True)
class Settings:
    """What every metric of one measurement shares."""

    loss: str = "mse"
    labels: str = "01"  # the label scale: how the spectrum reads and thresholds the outputs
    batch_size: int | None = None
    n_threads: int | None = None
    decoder_input: object = None  # a Seq2SeqTransformer's teacher-forcing input, else None
    sigma: float = probes.DEFAULT_SIGMA
    repeats: int = 10
    seed: int = 0
    definition: str = "official"
    hessian_samples: int = 20
    hessian_iters: int = 30
    spectrum_samples: int = spectrum.DEFAULT_SAMPLES
    spectrum_exact: bool | None = None  # None: exact up to spectrum.EXACT_MAX_N, Monte-Carlo beyond
    extra: Mapping = field(default_factory=dict)  # settings of user-registered metrics

    @property
    def seq(self) -> dict:
        """The decoder input as the keyword the probes take (empty for the encoder)."""
        return {} if self.decoder_input is None else {"decoder_input": self.decoder_input}


def measure(model, x, y, names, settings: Settings) -> dict:
    """The columns of the metrics ``names`` (in order) on ``x, y``."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; registered: {sorted(METRICS)}")
    row = {}
    for name in names:
        row.update(METRICS[name](model, x, y, settings))
    return row


@register("loss")
def _loss(model, x, y, s):
    return {"measure_loss": model.loss(x, y, loss=s.loss, n_threads=s.n_threads, **s.seq)}


@register("sharpness")
def _sharpness(model, x, y, s):
    """The paper's sharpness with the same noise for every batch (paper_compatible), ``repeats`` draws."""
    est = probes.sharpness(model, x, y, sigma=s.sigma, repeats=s.repeats, seed=s.seed, batch_size=s.batch_size,
                           paper_compatible=True, loss=s.loss, n_threads=s.n_threads, **s.seq)
    return {"sharpness": est.value, "sharpness_stderr": est.stderr}


@register("blowup")
def _blowup(model, x, y, s):
    """LayerNorm blowup aggregates; the seq2seq model's per stack, complete and official."""
    if model.config["norm"] == "none":
        return {}
    blow = probes.ln_blowup(model, x, definition=s.definition, n_threads=s.n_threads, **s.seq)
    if s.seq:
        parts = ("encoder", "decoder", "official/encoder", "official/decoder")
        return {f"blowup_{p.replace('/', '_')}_{k}": blow[f"{p}/{k}"] for p in parts for k in probes.LN_AGGREGATES}
    return {f"blowup_{k}": blow[k] for k in probes.LN_AGGREGATES}


@register("param_norm")
def _param_norm(model, x, y, s):
    return {"param_norm": probes.param_norm(model)}


@register("hessian")
def _hessian(model, x, y, s):
    """Top eigenvalue (Lanczos) and Hutchinson trace on the sharpness parameter set."""
    kw = dict(seed=s.seed, loss=s.loss, batch_size=s.batch_size, n_threads=s.n_threads, **s.seq)
    top = probes.hessian_eigenvalues(model, x, y, k=1, max_iter=s.hessian_iters, **kw)
    trace = probes.hessian_trace(model, x, y, samples=s.hessian_samples, **kw)
    return {"hessian_top": float(top.values[0]), "hessian_trace": trace.value, "hessian_trace_stderr": trace.stderr}


@register("logit_scale")
def _logit_scale(model, x, y, s):
    """The attention-logit scale |q.k|/sqrt(d_head): max over layers and heads, mean of the per-head means."""
    scale = probes.attention_logit_scale(model, x, n_threads=s.n_threads, **s.seq)
    return {"logit_max": float(scale["max"].max()), "logit_mean": float(scale["mean"].mean())}


@register("spectrum")
def _spectrum(model, x, y, s):
    """The model function's Fourier weight per degree and average sensitivity (thresholded and real-valued),
    on the measurement data's length: exact for n <= 20, Monte-Carlo with standard errors beyond."""
    if s.spectrum_exact and x.shape[1] > spectrum.EXACT_MAX_N:
        raise ValueError(f"spectrum_exact=True enumerates 2**n inputs, and n={x.shape[1]} is beyond the spectrum's "
                         f"exact limit of {spectrum.EXACT_MAX_N}; pass spectrum_exact=None or False (Monte-Carlo)")
    est = spectrum.model_spectrum(model, x.shape[1], exact=s.spectrum_exact, samples=s.spectrum_samples, seed=s.seed,
                                  scale=s.labels, n_threads=s.n_threads)
    return est.columns()
