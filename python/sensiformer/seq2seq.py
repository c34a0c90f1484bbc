"""The encoder-decoder transformer of the paper's scratchpad experiment (``TorchModelWithScratchpad``),
backed by the C engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _native
from ._validation import (REAL_KINDS, as_tokens, check_bool, check_choice, check_float, check_int, check_seed,
                          quiet_cast, resolve_threads)
from ._vocabulary import ACTIVATIONS, DTYPES, MAX_LAYERS, MODEL_KINDS, NORM_TYPES, NORMS, POSITIONALS, SOS
from .model import _dtype_name, _EngineModel, _options_repr, check_sizes

if TYPE_CHECKING:
    from ._typing import ArrayLike, DType

_NORMS = {name: NORMS[name] for name in ("post", "pre")}  # nn.Transformer's norm_first; no 'none' 


def _as_labels(y, name, rows, dtype):
    """A (rows, L) finite real array in ``dtype``."""
    arr = np.asarray(y)
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if arr.dtype.kind not in REAL_KINDS:
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape ({rows}, length) with length >= 1 (one label per decoder "
                         f"position), got {arr.shape}")
    arr = quiet_cast(arr, dtype)  # an overflow (1e39 into float32) is caught as non-finite below
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite in {np.dtype(dtype).name} (found NaN, inf or overflow)")
    return arr


def _as_decoder_input(dec, rows, max_length):
    """A (rows, S) uint8 array of tokens 0, 1 or SOS=2, 1 <= S <= max_length."""
    arr = np.asarray(dec)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"decoder_input must be an integer array of tokens 0, 1 or SOS=2, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] < 1:
        raise ValueError(f"decoder_input must have shape ({rows}, length) with length >= 1, got {arr.shape}")
    if arr.shape[1] > max_length:
        raise ValueError(f"decoder_input has length {arr.shape[1]}, longer than n_positions+1={max_length}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > SOS:
        raise ValueError(f"decoder_input must hold tokens 0, 1 or SOS=2, found values in [{lo}, {hi}]")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def teacher_forcing(y: ArrayLike) -> np.ndarray:
    """The decoder input ``[SOS, y_1, ..., y_n]`` (rows, n + 1) for 0/1 label sequences ``y`` (rows, n)."""
    arr = np.asarray(y)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"y must have shape (rows, length) with length >= 1, got {arr.shape}")
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        raise ValueError("teacher forcing feeds the labels back as tokens, so y must be 0/1 "
                         "(pass decoder_input explicitly for other labels)")
    out = np.empty((arr.shape[0], arr.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = SOS
    out[:, 1:] = arr
    return out


class Seq2SeqTransformer(_EngineModel):
    """Encoder-decoder transformer with a scratchpad: the official ``TorchModelWithScratchpad``.

    Token embedding (3 -> d/2: tokens 0, 1 and SOS=2) and a learned positional embedding
    (n_positions + 1 -> d/2), both shared by encoder and decoder and concatenated; an
    ``nn.Transformer`` (``n_layers`` encoder and ``n_decoder_layers`` decoder layers, causal
    decoder self-attention, cross-attention, final encoder and decoder LayerNorms); and
    ``Linear(d, 1)`` at every decoder position. Trained by teacher forcing on the decoder input
    ``[SOS, y_1..y_n]`` with the loss on the outputs at positions 0..n-1 (the labels y_1..y_n);
    ``generate`` decodes autoregressively with a key/value cache.

    Parameters
    ----------
    n_positions : int
        Longest encoder input n (the official ``max_len``); the positional table has n + 1 rows.
    d_model : int
        Width (even, divisible by ``n_heads``); 32 in the paper's scratchpad runs.
    n_heads, n_layers : int
        ``n_layers`` encoder layers (and, by default, decoder layers).
    d_ff : int, optional
        FFN width (default ``d_model``, as the paper).
    norm : {"post", "pre"}
        Norm placement ("pre" is ``nn.Transformer(norm_first=True)``).
    norm_type : {"layer", "rms"}
        Every norm (the layers' and the final ones) an ``nn.LayerNorm`` or an ``nn.RMSNorm``.
    positional : {"concat", "add", "sinusoidal", "none", "rope"}
        How positions enter both stacks (see ``Transformer``); with "none" the encoder sees a
        multiset of tokens and the decoder keeps only its causal mask; "rope" turns the queries and
        keys of every self-attention (encoder and decoder), not of the cross-attention.
    rope_base : float
        RoPE's base (see ``Transformer``).
    ln_eps : float
    activation : {"relu", "gelu", "gelu_tanh"}
    dtype : {"float32", "float64"}
    seed : int
        Initialisation seed (``nn.Transformer``'s init distributions, not its random bits).
    n_decoder_layers : int, optional
        Decoder layers (default ``n_layers``).
    identical_layers : bool
        Keep the copies that ``nn.Transformer``'s cloning leaves after its xavier re-initialisation
        (the FFN biases are equal across the layers of a stack; every matrix differs). Default True.
    """

    _kind_name = "Seq2SeqTransformer"
    SOS = SOS

    def __init__(self, n_positions: int, *, d_model: int = 32, n_heads: int = 2, n_layers: int = 2,
                 d_ff: int | None = None, norm: str = "post", ln_eps: float = 1e-5, activation: str = "relu",
                 dtype: DType = "float32", seed: int = 0, n_decoder_layers: int | None = None,
                 identical_layers: bool = True, norm_type: str = "layer", positional: str = "concat",
                 rope_base: float = 10000.0) -> None:
        n_positions, d_model, n_heads, n_layers, d_ff = check_sizes(n_positions, d_model, n_heads, n_layers, d_ff)
        n_decoder_layers = n_layers if n_decoder_layers is None else check_int(n_decoder_layers, "n_decoder_layers",
                                                                               1, MAX_LAYERS)
        check_choice(norm, "norm", tuple(_NORMS))
        check_choice(norm_type, "norm_type", tuple(NORM_TYPES))
        check_choice(positional, "positional", tuple(POSITIONALS))
        rope_base = check_float(rope_base, "rope_base", 0.0)
        if rope_base == 0:
            raise ValueError("rope_base must be > 0, got 0.0")
        ln_eps = check_float(ln_eps, "ln_eps", 0.0)
        check_choice(activation, "activation", tuple(ACTIVATIONS))
        dtype = _dtype_name(dtype)
        seed = check_seed(seed)
        identical_layers = check_bool(identical_layers, "identical_layers")
        self._config = dict(n_positions=n_positions, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                            n_decoder_layers=n_decoder_layers, d_ff=d_ff, norm=norm, ln_eps=ln_eps,
                            activation=activation, dtype=dtype, seed=seed, identical_layers=bool(identical_layers),
                            norm_type=norm_type, positional=positional,
                            rope_base=rope_base)
        self._engine = _native.Model(n_positions=n_positions, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                                     d_ff=d_ff, norm=_NORMS[norm], final_norm=True, ln_eps=ln_eps,
                                     activation=ACTIVATIONS[activation], dtype=DTYPES[dtype], seed=seed,
                                     identical_layers=identical_layers, kind=MODEL_KINDS["seq2seq"],
                                     n_decoder_layers=n_decoder_layers, norm_type=NORM_TYPES[norm_type],
                                     positional=POSITIONALS[positional], rope_base=rope_base)
        self._bind_buffers()

    def __repr__(self):
        c = self._config
        return (f"Seq2SeqTransformer(n_positions={c['n_positions']}, d_model={c['d_model']}, n_heads={c['n_heads']}, "
                f"n_layers={c['n_layers']}, n_decoder_layers={c['n_decoder_layers']}, d_ff={c['d_ff']}, "
                f"norm={c['norm']!r}{_options_repr(c)}, dtype={c['dtype']!r}, params={self.num_parameters})")

    # ---- inputs -------------------------------------------------------------------------------
    teacher_forcing = staticmethod(teacher_forcing)

    def _inputs(self, x, decoder_input=None):
        x = as_tokens(x, "x", self.n_positions)
        if decoder_input is None:
            return x, None
        return x, _as_decoder_input(decoder_input, x.shape[0], self.n_positions + 1)

    def _probe_data(self, x, y, decoder_input):
        return self._loss_data(x, y, decoder_input)

    def _probe_inputs(self, x, decoder_input, y, what):
        """(x, decoder input) of a forward-only probe: the decoder input, or the teacher forcing [SOS, y]."""
        if (decoder_input is None) == (y is None):
            raise TypeError(f"a Seq2SeqTransformer's {what} needs decoder_input or y (teacher forcing [SOS, y]), "
                            "exactly one of them")
        return self._inputs(x, self.teacher_forcing(y) if decoder_input is None else decoder_input)

    def _ln_names(self):
        """Every LayerNorm (encoder, final encoder norm, decoder, final decoder norm), then the official
        hooks' subset as ``"official/<name>"``: the rows of ``probes.ln_blowup``."""
        c = self._config
        enc = [f"model.encoder.layers.{i}.norm{j}" for i in range(c["n_layers"]) for j in (1, 2)]
        dec = [f"model.decoder.layers.{i}.norm{j}" for i in range(c["n_decoder_layers"]) for j in (1, 2, 3)]
        official = enc + [f"model.decoder.layers.{i}.norm{j}" for i in range(c["n_decoder_layers"]) for j in (1, 2)]
        return enc + ["model.encoder.norm"] + dec + ["model.decoder.norm"] + [f"official/{n}" for n in official]

    def _ln_groups(self):
        """(key prefix, rows) of the blowup's aggregates: each stack, complete and official."""
        bounds = np.cumsum((0,) + _native.seq2seq_ln_counts(self._engine))
        parts = ("encoder", "decoder", "official/encoder", "official/decoder")
        return [(f"{part}/", slice(bounds[g], bounds[g + 1])) for g, part in enumerate(parts)]

    def _attention_modules(self):
        c = self._config
        return ([f"model.encoder.layers.{i}.self_attn" for i in range(c["n_layers"])]
                + [f"model.decoder.layers.{i}.self_attn" for i in range(c["n_decoder_layers"])]
                + [f"model.decoder.layers.{i}.multihead_attn" for i in range(c["n_decoder_layers"])])

    def _loss_data(self, x, y, decoder_input):
        x, dec = self._inputs(x, decoder_input)
        y = _as_labels(y, "y", x.shape[0], self.dtype)
        if dec is None:
            dec = teacher_forcing(y)
            if dec.shape[1] > self.n_positions + 1:
                raise ValueError(f"y has {y.shape[1]} labels per row; at most n_positions={self.n_positions}")
        elif dec.shape[1] < y.shape[1]:
            raise ValueError(f"decoder_input has {dec.shape[1]} positions for {y.shape[1]} labels per row")
        return x, dec, y

    # ---- computation --------------------------------------------------------------------------
    def forward(self, x: ArrayLike, decoder_input: ArrayLike | None, *, n_threads: int | None = None) -> np.ndarray:
        """Outputs (batch, S) at every decoder position.

        ``x`` (batch, n) holds 0/1 tokens (n <= n_positions); ``decoder_input`` (batch, S) holds
        tokens 0, 1 or SOS=2 (S <= n_positions + 1), e.g. ``teacher_forcing(y)`` = [SOS, y]. Output s
        depends on decoder positions 0..s only (causal mask).
        """
        if decoder_input is None:
            raise TypeError("forward needs decoder_input (e.g. model.teacher_forcing(y)); use generate(x) to decode")
        x, dec = self._inputs(x, decoder_input)
        return _native.forward(model=self._engine, x=x, decoder_input=dec, n_threads=resolve_threads(n_threads))

    __call__ = forward

    def generate(self, x: ArrayLike, *, steps: int | None = None, cache: bool = True, threshold: float = 0.5,
                 return_outputs: bool = False,
                 n_threads: int | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Autoregressive decoding from SOS: the generated bits (batch, steps) as uint8.

        Step t feeds back ``output_t > threshold`` (the official ``autoregressive_answer``).
        ``steps`` defaults to the input length n (the scratchpad's y_1..y_n). ``cache=True`` keeps
        every layer's keys and values, so each step costs one position; ``cache=False`` recomputes
        the whole model at every step, as the official code (the reference). With
        ``return_outputs`` also the raw outputs (batch, steps).
        """
        self.require_finite("generate")
        x = as_tokens(x, "x", self.n_positions)
        steps = x.shape[1] if steps is None else check_int(steps, "steps", 1, self.n_positions + 1)
        threshold = check_float(threshold, "threshold")
        tokens, outputs = _native.generate(model=self._engine, x=x, steps=steps, cache=check_bool(cache, "cache"),
                                           threshold=threshold, n_threads=resolve_threads(n_threads))
        return (tokens, outputs) if return_outputs else tokens

    def autoregressive_accuracy(self, x: ArrayLike, y: ArrayLike, *, threshold: float = 0.5, cache: bool = True,
                                n_threads: int | None = None) -> dict:
        """Accuracy of ``generate(x)`` against the label sequences ``y`` (batch, L), whose bits are
        ``y > threshold`` (0/1 labels with 0.5, or +-1 labels with 0).

        ``token``: the fraction of matching bits (the paper's ``autoregressive_accuracy``);
        ``sequence``: the fraction of rows generated entirely right.
        """
        x = as_tokens(x, "x", self.n_positions)
        y = _as_labels(y, "y", x.shape[0], np.float64)
        if y.shape[1] > self.n_positions + 1:
            raise ValueError(f"y has {y.shape[1]} labels per row; at most n_positions+1={self.n_positions + 1}")
        tokens = self.generate(x, steps=y.shape[1], cache=cache, threshold=threshold, n_threads=n_threads)
        match = tokens == (y > threshold)
        return dict(token=float(match.mean()), sequence=float(match.all(axis=1).mean()))
