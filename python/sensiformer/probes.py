"""Loss-landscape and internal-state probes (Hahn & Rofin 2024, §1.4–1.6 of the spec).

* ``sharpness``: expected loss increase under Gaussian parameter noise, with a standard error.
* ``ln_blowup``: LayerNorm blowup as the official hooks measure it, or in the theory's form (a
  ``Seq2SeqTransformer``: encoder and decoder separately, every LayerNorm and the official subset).
* ``autoregressive_accuracy``: per-token and per-sequence accuracy of a ``Seq2SeqTransformer``'s
  ``generate`` (the paper's scratchpad measure).
* ``param_norm``, ``tensor_norms``, ``distance``: parameter norms (positional embeddings
  excluded by default, as the paper).
* ``attention_logit_scale``: max and mean |q.k|/sqrt(d_head) per layer and head.
* Hessian probes (``hvp``, ``hessian_eigenvalues``, ``hessian_trace``, ``hessian_density``;
  see ``sensiformer.hessian``) and landscape probes (``worst_case_sharpness``,
  ``landscape_1d``, ``landscape_2d``; see ``sensiformer.landscape``), re-exported here.

Losses are raw MSE on the label scale the model was trained on; the paper's plots multiply
sharpness by 4 (the {0,1} -> ±1 conversion), which ``sharpness(..., as_pm1=True)`` applies.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

import numpy as np

from . import _native
from ._validation import (as_finite_array, check_bool, check_choice, check_float, check_int,
                          check_seed, resolve_threads)
from .estimate import Estimate
from ._vocabulary import LOSSES, TENSOR_KINDS

if TYPE_CHECKING:
    from ._typing import ArrayLike, EngineModel, Exclude

DEFAULT_SIGMA = 0.02


def tensor_mask(model: EngineModel, *, exclude: Exclude = ("positional",)) -> np.ndarray:
    """Per tensor 1 if it is included, 0 if excluded.

    ``exclude`` holds tensor kinds ("positional", "token_embedding", "weight", "bias",
    "norm_weight", "norm_bias") or glob patterns of parameter names
    (e.g. ``"encoders.layers.0.*"``).
    """
    if isinstance(exclude, str):
        exclude = (exclude,)
    if exclude is not None and not isinstance(exclude, (tuple, list)):
        raise TypeError(f"exclude must be a tuple or list of strings (or one string), got {exclude!r}")
    exclude = tuple(exclude or ())
    for pattern in exclude:
        if not isinstance(pattern, str):
            raise TypeError(f"exclude must hold strings, got {pattern!r}")
    info = model.tensor_info
    kinds = {t["kind"] for t in info}
    mask = np.ones(len(info), dtype=np.uint8)
    for pattern in exclude:
        matched = [i for i, t in enumerate(info)
                   if pattern == t["kind"] or (pattern not in kinds and fnmatch.fnmatchcase(t["name"], pattern))]
        # a typo would silently replace the default (and perturb the positional tables); a kind this
        # model lacks (norm_weight with norm="none") is no typo
        if not matched and pattern not in TENSOR_KINDS:
            raise ValueError(f"exclude pattern {pattern!r} matches no parameter of this model (give tensor kinds "
                             f"{TENSOR_KINDS} or glob patterns of model.parameters() names)")
        mask[matched] = 0
    return mask


def _included_size(model, mask):
    return int(sum(t["size"] for t, keep in zip(model.tensor_info, mask) if keep))


def sharpness(model: EngineModel, x: ArrayLike, y: ArrayLike, *, sigma: float | None = None, rho: float | None = None,
              repeats: int = 10, seed: int = 0, exclude: Exclude = ("positional",), noise: ArrayLike | None = None,
              batch_size: int | None = None, paper_compatible: bool = False, as_pm1: bool = False, loss: str = "mse",
              n_threads: int | None = None, decoder_input: ArrayLike | None = None) -> Estimate:
    """Gaussian sharpness: E_z[L(θ + σz)] − L(θ), z ~ N(0, I) on the included parameters.

    Parameters
    ----------
    model : Transformer or Seq2SeqTransformer
    x, y : arrays
        Inputs (rows, length) and labels (rows,) on the scale the model was trained on. With
        ``batch_size`` the rows are split into batches of that size (default: one batch). For a
        ``Seq2SeqTransformer`` y are label sequences (rows, L) and the loss is the teacher-forced
        one (decoder input ``[SOS, y]`` unless ``decoder_input`` is given), as the official code.
    sigma : float, optional
        Noise standard deviation per coordinate (default 0.02, the paper's epsilon).
    rho : float, optional
        Alternatively the noise norm: σ = ρ / sqrt(number of perturbed parameters).
    repeats : int
        Number of noise draws R.
    seed : int
        Noise seed. Draw r is a fixed function of (seed, r): the same seed gives common random
        numbers across calls and over training.
    exclude : tuple of str
        Tensors left unperturbed (kinds or name patterns; see ``tensor_mask``). The paper
        excludes the positional embeddings.
    noise : array (repeats, num_parameters), optional
        Explicit standard-normal draws laid out like ``model.flat`` (entries of excluded
        tensors are ignored).
    paper_compatible : bool
        Use the same R draws for every batch, as the official code does; otherwise each batch
        gets its own draws (more independent noise per call).
    as_pm1 : bool
        Multiply by 4: the ±1-scale value of a model trained on {0,1} labels (the paper's plots).

    Returns
    -------
    Estimate
        Mean over the R draws of the batch-averaged loss increase, its standard error over
        draws, and the per-draw values in ``samples``. The model's parameters are never written
        (the engine perturbs a private copy), so they are unchanged even while the probe runs.
    """
    check_choice(loss, "loss", tuple(LOSSES))
    model.require_finite("sharpness")
    x, y, batch_size, dec = model._probe_batches(x, y, batch_size, decoder_input)
    repeats = check_int(repeats, "repeats", 1, 1 << 20)
    seed = check_seed(seed)
    mask = tensor_mask(model, exclude=exclude)
    if sigma is not None and rho is not None:
        raise ValueError("give sigma or rho, not both")
    if rho is not None:
        sigma = check_float(rho, "rho", 0.0) / np.sqrt(max(_included_size(model, mask), 1))
    sigma = DEFAULT_SIGMA if sigma is None else check_float(sigma, "sigma", 0.0)
    if noise is not None:
        shape = np.shape(noise)
        noise = as_finite_array(noise, "noise", model.dtype)
        if noise.ndim == 1:
            noise = noise[None, :]
        if noise.shape != (repeats, model.num_parameters):
            raise ValueError(f"noise must have shape (repeats, num_parameters) = {(repeats, model.num_parameters)}, "
                             f"got {shape}")
    shared = check_bool(paper_compatible, "paper_compatible") or noise is not None
    as_pm1 = check_bool(as_pm1, "as_pm1")
    base, perturbed = _native.sharpness(model=model._engine, x=x, y=y, decoder_input=dec, batch_size=batch_size,
                                        loss=LOSSES[loss], sigma=sigma, repeats=repeats, seed=seed, mask=mask,
                                        noise=noise, shared_draws=shared, n_threads=resolve_threads(n_threads))
    if not (np.isfinite(base).all() and np.isfinite(perturbed).all()):
        raise FloatingPointError(f"sharpness: the perturbed loss is not finite in {model.dtype.name} (sigma={sigma!r} "
                                 "overflows the parameters or the loss); use a smaller sigma or rho")
    per_draw = (perturbed - base[None, :]).mean(axis=1)
    if as_pm1:
        per_draw = 4.0 * per_draw
    return Estimate.from_samples(per_draw)


LN_AGGREGATES = ("maxs_prod", "means_prod", "maxs_sum", "means_sum")


def ln_names(model: EngineModel) -> list[str]:
    """Names of the LayerNorms ``ln_blowup`` reports, in its order (a seq2seq model: every LayerNorm,
    then the official subset as ``"official/<name>"``)."""
    return model._ln_names()


def _aggregates(maxs, means):
    """The products and sums over LayerNorms per sample, then the batch mean (the official aggregates)."""
    return dict(maxs_prod=float(np.prod(maxs, axis=0).mean()), means_prod=float(np.prod(means, axis=0).mean()),
                maxs_sum=float(np.sum(maxs, axis=0).mean()), means_sum=float(np.sum(means, axis=0).mean()))


def ln_blowup(model: EngineModel, x: ArrayLike, *, definition: str = "official", per_sample: bool = False,
              n_threads: int | None = None, decoder_input: ArrayLike | None = None, y: ArrayLike | None = None) -> dict:
    """LayerNorm blowup: the normalisation factors 1/std of every LayerNorm's input.

    ``definition="official"`` reproduces the official hooks exactly: 1/std with the unbiased
    std and no eps (``torch.std``), all positions except in the last layer, where only the
    readout position counts. ``definition="theory"``: 1/sqrt(var + eps) with the biased
    variance, the factor LayerNorm actually applies.

    Returns a dict with, per LayerNorm (keys ``"<ln name>/max"`` and ``"<ln name>/mean"``), the
    batch mean of the per-sample max and mean over positions; the aggregates ``maxs_prod``
    (the paper's "LayerNorm blowup"), ``means_prod``, ``maxs_sum`` and ``means_sum`` (product or
    sum over LayerNorms per sample, then the batch mean); and, with ``per_sample=True``, the
    arrays ``maxs`` and ``means`` of shape (n_layernorms, batch).

    A ``Seq2SeqTransformer`` needs its decoder input (``decoder_input``, or ``y`` for the teacher
    forcing [SOS, y] that the official measurement feeds) and reports the encoder and the decoder
    separately: every LayerNorm (``ln_names``: norm1 and norm2 of the encoder layers, norm1, norm2
    and norm3 of the decoder layers, the final encoder and decoder norms) over every position, with
    aggregates ``encoder/maxs_prod``, ``decoder/maxs_prod``, etc.; and the official hooks' subset
    (paper.md §9.6: norm1 and norm2 only, the last layer of each stack at its last position) under
    ``official/...``, whose ``official/encoder/maxs_prod`` and ``official/decoder/maxs_prod`` are the
    official ``blowup_encoder_maxs_prod`` and ``blowup_decoder_maxs_prod``.
    """
    check_choice(definition, "definition", ("official", "theory"))
    per_sample = check_bool(per_sample, "per_sample")
    model.require_finite("ln_blowup")
    x, dec = model._probe_inputs(x, decoder_input, y, "ln_blowup")
    names = model._ln_names()
    if not names:
        raise ValueError("the model has norm='none': there is no LayerNorm to probe")
    maxs, means = _native.ln_blowup(model=model._engine, x=x, decoder_input=dec, theory=definition == "theory",
                                    n_threads=resolve_threads(n_threads))
    result = {}
    for name, mx, mn in zip(names, maxs, means):
        result[f"{name}/max"] = float(mx.mean())
        result[f"{name}/mean"] = float(mn.mean())
    for prefix, rows in model._ln_groups():
        result.update({f"{prefix}{key}": value for key, value in _aggregates(maxs[rows], means[rows]).items()})
    if per_sample:
        result["maxs"], result["means"] = maxs, means
    return result


def autoregressive_accuracy(model: EngineModel, x: ArrayLike, y: ArrayLike, *, threshold: float = 0.5, cache: bool = True,
                            n_threads: int | None = None) -> dict:
    """``token`` (the paper's ``autoregressive_accuracy``) and ``sequence`` accuracy of a
    ``Seq2SeqTransformer``'s autoregressive decoding of x against the label sequences y."""
    if not hasattr(model, "autoregressive_accuracy"):  # only a model that decodes has it
        raise TypeError("autoregressive_accuracy needs a Seq2SeqTransformer")
    return model.autoregressive_accuracy(x, y, threshold=threshold, cache=cache, n_threads=n_threads)


def param_norm(model: EngineModel, *, exclude: Exclude = ("positional",)) -> float:
    """L2 norm of all parameters except the excluded ones (the paper excludes positional
    embeddings; its initial value is about 35.8 for the default d=128 model)."""
    mask = tensor_mask(model, exclude=exclude)
    flat = model.flat_snapshot()
    total = 0.0
    for t, keep in zip(model.tensor_info, mask):
        if keep:
            seg = flat[t["offset"]:t["offset"] + t["size"]].astype(np.float64)
            total += float(seg @ seg)
    return float(np.sqrt(total))


def tensor_norms(model: EngineModel) -> dict:
    """Frobenius norm of every parameter tensor, keyed by name."""
    return {name: float(np.linalg.norm(p.astype(np.float64))) for name, p in model.state_dict().items()}


def distance(model: EngineModel, reference: EngineModel | ArrayLike, *, exclude: Exclude = ("positional",)) -> float:
    """L2 distance between the parameters of two models of the same shape (e.g. from init), or
    between a model and a flat parameter array laid out like ``model.flat``."""
    # a model has tensor_info; NumPy arrays have a .flat too, so that cannot tell them apart
    ref_flat = reference.flat_snapshot() if hasattr(reference, "tensor_info") else as_finite_array(
        reference, "reference", np.float64)
    flat = model.flat_snapshot()
    if ref_flat.shape != flat.shape:
        raise ValueError(f"reference must have {model.flat.shape[0]} parameters (the model's), got shape "
                         f"{ref_flat.shape}")
    mask = tensor_mask(model, exclude=exclude)
    total = 0.0
    for t, keep in zip(model.tensor_info, mask):
        if keep:
            sl = slice(t["offset"], t["offset"] + t["size"])
            diff = flat[sl].astype(np.float64) - ref_flat[sl].astype(np.float64)
            total += float(diff @ diff)
    return float(np.sqrt(total))


def attention_logit_scale(model: EngineModel, x: ArrayLike, *, n_threads: int | None = None,
                          decoder_input: ArrayLike | None = None, y: ArrayLike | None = None) -> dict:
    """Attention-logit scale |q.k| / sqrt(d_head), on which the paper's sensitivity bound
    depends exponentially.

    Returns a dict with ``"max"`` and ``"mean"``, arrays of shape (n_layers, n_heads): over the
    batch, every key, and the queries the model computes (every position, except in the last
    layer the readout position only, the one query that reaches the output).

    A ``Seq2SeqTransformer`` needs its decoder input (``decoder_input``, or ``y`` for the teacher
    forcing [SOS, y]); its arrays have a row per attention module, named in ``"modules"``: the
    encoder self-attention layers, the decoder self-attention layers (each query over the keys the
    causal mask lets it see) and the cross-attention layers, over every position.
    """
    model.require_finite("attention_logit_scale")
    x, dec = model._probe_inputs(x, decoder_input, y, "attention_logit_scale")
    maxs, means = _native.attention_logits(model=model._engine, x=x, decoder_input=dec,
                                           n_threads=resolve_threads(n_threads))
    modules = model._attention_modules()
    return {"max": maxs, "mean": means} if modules is None else {"max": maxs, "mean": means, "modules": modules}


# The Hessian and landscape probes live in their own modules; they import this one.
from .hessian import hessian_density, hessian_eigenvalues, hessian_matrix, hessian_trace, hvp  # noqa: E402
from .landscape import landscape_1d, landscape_2d, random_direction, worst_case_sharpness  # noqa: E402
