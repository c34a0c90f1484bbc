"""Parameter blocks: which entries of ``model.flat`` a Hessian or landscape probe acts on.

A block is given as one spec or a list of specs (their union):

* a glob pattern over parameter names, e.g. ``"encoders.layers.0.self_attn.*"``;
* a tensor kind (``"token_embedding"``, ``"positional"``, ``"weight"``, ``"bias"``,
  ``"norm_weight"``, ``"norm_bias"``);
* ``"layernorm"`` (every LayerNorm gain and bias) or ``"embeddings"`` (token and positional
  tables);
* one head's query, key or value rows inside the packed ``in_proj_weight`` and
  ``in_proj_bias``: ``"encoders.layers.0.self_attn.q[head=1]"`` (``k``, ``v`` likewise;
  without ``[head=h]`` all heads), or its columns of ``out_proj.weight``: ``"...self_attn.o[head=1]"``;
  the prefix may itself be a glob (``"encoders.layers.*.self_attn.v[head=0]"``); a
  ``Seq2SeqTransformer``'s cross-attention heads likewise (``"model.decoder.layers.0.multihead_attn.k[head=1]"``);
* a boolean mask or an integer index array over ``model.flat``.

Excluded tensors (``exclude``, positional embeddings by default, as for sharpness) are then
removed, so the Hessian probes and ``probes.sharpness`` act on the same parameters.
"""

from __future__ import annotations

import fnmatch
import re

import numpy as np

from ._vocabulary import TENSOR_KINDS
from .probes import tensor_mask

_HEAD_SPEC = re.compile(r"^(?P<prefix>.+)\.(?P<part>[qkvo])(?:\[head=(?P<head>\d+|\*)\])?$")
_NAMED = {"layernorm": ("norm_weight", "norm_bias"), "embeddings": ("token_embedding", "positional")}


def _tensor_range(t):
    return np.arange(t["offset"], t["offset"] + t["size"], dtype=np.int64)


def _head_indices(model, spec):
    """Flat indices of one head sub-block spec, or None if ``spec`` is not one."""
    m = _HEAD_SPEC.match(spec)
    if not m or not m.group("prefix").endswith(("self_attn", "multihead_attn")):  # multihead_attn: cross-attention
        return None
    c = model.config
    d, n_heads = c["d_model"], c["n_heads"]
    dh = d // n_heads
    head = m.group("head")
    heads = range(n_heads) if head in (None, "*") else [int(head)]
    if any(h >= n_heads for h in heads):
        raise ValueError(f"block {spec!r}: the model has {n_heads} heads (0..{n_heads - 1})")
    part = m.group("part")
    info = {t["name"]: t for t in model.tensor_info}
    pieces = []
    attn_prefixes = sorted({name.rsplit(".", 1)[0] for name in info if name.endswith(".in_proj_weight")})
    matched = [p for p in attn_prefixes if fnmatch.fnmatchcase(p, m.group("prefix"))]
    if not matched:
        raise ValueError(f"block {spec!r}: no attention module matches {m.group('prefix')!r}")
    for prefix in matched:
        for h in heads:
            cols = np.arange(h * dh, (h + 1) * dh)
            if part == "o":  # columns of out_proj.weight (d, d) that read this head
                t = info[prefix + ".out_proj.weight"]
                rows = np.arange(d)[:, None]
                pieces.append(t["offset"] + (rows * d + cols[None, :]).reshape(-1))
                continue
            rows = "qkv".index(part) * d + cols
            w, b = info[prefix + ".in_proj_weight"], info[prefix + ".in_proj_bias"]
            pieces.append(w["offset"] + (rows[:, None] * d + np.arange(d)[None, :]).reshape(-1))
            pieces.append(b["offset"] + rows)
    return np.concatenate(pieces).astype(np.int64)


def _spec_indices(model, spec):
    if not isinstance(spec, str):
        arr = np.asarray(spec)
        if arr.dtype == np.bool_:
            if arr.shape != (model.num_parameters,):
                raise ValueError(f"a boolean block mask must have shape ({model.num_parameters},), got {arr.shape}")
            return np.flatnonzero(arr).astype(np.int64)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError("block must be a name pattern, a list of them, a boolean mask or an index array")
        if arr.size and (arr.min() < 0 or arr.max() >= model.num_parameters):
            raise ValueError(f"block indices must lie in [0, {model.num_parameters})")
        return arr.astype(np.int64)
    heads = _head_indices(model, spec)
    if heads is not None:
        return heads
    kinds = _NAMED.get(spec, (spec,) if spec in TENSOR_KINDS else ())
    chosen = [t for t in model.tensor_info
              if t["kind"] in kinds or (not kinds and fnmatch.fnmatchcase(t["name"], spec))]
    if not chosen:
        raise ValueError(f"block {spec!r} matches no parameter (names are model.parameters() keys)")
    return np.concatenate([_tensor_range(t) for t in chosen])


def block_indices(model, *, block=None, exclude=("positional",)) -> np.ndarray:
    """Sorted flat indices (into ``model.flat``) of a block, with the excluded tensors removed.

    Parameters
    ----------
    model : Transformer
    block : str, list, array or None
        See the module docstring; None is every parameter.
    exclude : tuple of str
        Tensor kinds or name patterns removed afterwards (``probes.tensor_mask``).
    """
    if block is None:
        idx = np.arange(model.num_parameters, dtype=np.int64)
    elif isinstance(block, (list, tuple)):
        if not block:
            raise ValueError("block must not be empty")
        idx = np.concatenate([_spec_indices(model, s) for s in block])
    else:
        idx = _spec_indices(model, block)
    keep = np.zeros(model.num_parameters, dtype=bool)
    keep[idx] = True
    for t, included in zip(model.tensor_info, tensor_mask(model, exclude=exclude)):
        if not included:
            keep[t["offset"]:t["offset"] + t["size"]] = False
    out = np.flatnonzero(keep).astype(np.int64)
    if out.size == 0:
        raise ValueError(f"block {block!r} selects no parameters after exclude={exclude!r} "
                         "(positional embeddings are excluded by default; pass exclude=() to keep them)")
    return out
