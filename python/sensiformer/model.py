"""The encoder transformer of Hahn & Rofin (2024), backed by the C engine, and the machinery every
engine-backed model shares (parameter views, state dicts, copies, files; see also ``seq2seq.py``)."""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from . import _native
from ._files import save_npz_atomically
from ._vocabulary import (ACTIVATIONS, DTYPES, LOSSES, MAX_D_FF, MAX_D_MODEL, MAX_LAYERS, MAX_POSITIONS, NORM_TYPES,
                          NORMS, POSITIONALS, TENSOR_KINDS)
from ._validation import (as_finite_array, as_tokens, as_values, check_bool, check_choice, check_float, check_int,
                          check_seed, resolve_threads)

if TYPE_CHECKING:
    from ._typing import ArrayLike, DType, Mapping, PathLike
    from .seq2seq import Seq2SeqTransformer

FORMAT_VERSION = 1
# tokens per engine call when a caller streams many inputs through forward: bounds the
# activation workspace (a few MB at d_model=128) whatever the number of inputs
FORWARD_TOKENS = 1 << 14


class NonFiniteParametersError(FloatingPointError, ValueError):
    """The model's parameters hold NaN or inf (e.g. written through ``flat``), so a save, an
    evaluation or a probe would give meaningless numbers. A ``FloatingPointError`` and, like every
    refused argument, a ``ValueError``."""


class _EngineModel:
    """What every engine-backed model shares: the parameter table as zero-copy views, state
    dicts with the official names, copies, files. Subclasses build ``self._engine`` and
    ``self._config`` and call ``_bind_buffers``."""

    _kind_name = ""
    #: every model class by its file kind name (subclasses register themselves), so ``load`` needs no import
    _classes: dict = {}

    def _probe_batches(self, x, y, batch_size, decoder_input=None):
        """(x, y, batch_size, decoder input) checked for a probe on ``batch_size``-row batches: a
        seq2seq model's y are (rows, L) label sequences with its decoder inputs (default: teacher
        forcing [SOS, y]); an encoder's decoder input is None."""
        x, dec, y = self._probe_data(x, y, decoder_input)
        batch_size = x.shape[0] if batch_size is None else check_int(batch_size, "batch_size", 1)
        if x.shape[0] % batch_size:
            raise ValueError(f"x has {x.shape[0]} rows, not a multiple of batch_size={batch_size}")
        return x, y, batch_size, dec

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _EngineModel._classes[cls._kind_name] = cls

    def _bind_buffers(self):
        self._flat = self._engine.flat("params")
        self._flat_grad = self._engine.flat("grads")
        self._tensors = [dict(name=n, shape=s, offset=o, size=z, kind=TENSOR_KINDS[k], layer=l)
                         for n, s, o, z, k, l in self._engine.tensors()]
        self._params = OrderedDict((t["name"], self._view(self._flat, t)) for t in self._tensors)
        self._grads = OrderedDict((t["name"], self._view(self._flat_grad, t)) for t in self._tensors)

    @staticmethod
    def _view(flat, t):
        return flat[t["offset"]:t["offset"] + t["size"]].reshape(t["shape"])

    @contextlib.contextmanager
    def _exclusive(self, what):
        """Hold the model's busy flag (as an engine call does) while Python reads or writes its
        buffers, so a save never mixes parameters from before and after a training step."""
        try:
            self._engine.acquire()
        except RuntimeError as err:
            raise RuntimeError(f"{what} refused: the model is inside another call (e.g. Trainer.fit in another "
                               "thread); retry when that call has returned") from err
        try:
            yield
        finally:
            self._engine.release()

    # ---- description ------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The constructor arguments (a copy)."""
        return dict(self._config)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._config["dtype"])

    @property
    def n_positions(self) -> int:
        return self._config["n_positions"]

    @property
    def num_parameters(self) -> int:
        return self._flat.size

    @property
    def tensor_info(self) -> list[dict]:
        """Name, shape, offset into ``flat``, size, kind and layer of every tensor."""
        return [dict(t) for t in self._tensors]

    @property
    def last_threads(self) -> int:
        """How many threads the last parallel engine call actually used."""
        return self._engine.last_threads

    @property
    def workspace_bytes(self) -> int:
        """Bytes of the engine's activation workspace (sized by the largest call so far; it is
        kept between calls and freed with the model)."""
        return self._engine.workspace_bytes

    # ---- parameters -------------------------------------------------------------------------
    def parameters(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> writable zero-copy view, in the official ``named_parameters()`` order."""
        return OrderedDict(self._params)

    named_parameters = parameters

    def gradients(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> view of the gradient buffer (filled by ``loss_and_grad`` and training)."""
        return OrderedDict(self._grads)

    @property
    def flat(self) -> np.ndarray:
        """All parameters as one writable flat view, in ``parameters()`` order."""
        return self._flat

    @flat.setter
    def flat(self, values: ArrayLike) -> None:
        values = as_finite_array(values, "flat", self.dtype, self._flat.shape)
        with self._exclusive("setting flat"):
            self._flat[...] = values

    def flat_snapshot(self) -> np.ndarray:
        """A copy of ``flat`` taken under the busy guard: never from the middle of a training step
        running in another thread (that raises ``RuntimeError`` instead)."""
        with self._exclusive("reading the parameters"):
            return self._flat.copy()

    @property
    def flat_grad(self) -> np.ndarray:
        """The gradient buffer as one flat view."""
        return self._flat_grad

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of the parameters keyed by the official PyTorch names."""
        with self._exclusive("state_dict"):
            return OrderedDict((name, view.copy()) for name, view in self._params.items())

    def load_state_dict(self, state: Mapping[str, ArrayLike], strict: bool = True) -> None:
        """Copy parameters in from a mapping of names to arrays (NumPy arrays or torch tensors).

        With ``strict=True`` the keys must match exactly. Shapes must always match; nothing is
        written unless every entry is valid.
        """
        if not hasattr(state, "items"):
            raise TypeError("state must be a mapping of parameter names to arrays")
        strict = check_bool(strict, "strict")
        arrays = {}
        for key, value in state.items():
            if key not in self._params:
                if strict:
                    raise KeyError(f"unexpected key {key!r} in state (strict=True)")
                continue
            shape = self._params[key].shape
            if np.shape(value) != shape:
                raise ValueError(f"{key}: shape {np.shape(value)} does not match the model's {shape}")
            arrays[key] = as_finite_array(value, f"{key}: values", self.dtype)
        missing = [k for k in self._params if k not in arrays]
        if strict and missing:
            raise KeyError(f"missing keys in state (strict=True): {missing}")
        with self._exclusive("load_state_dict"):
            for key, value in arrays.items():
                self._params[key][...] = value

    def require_finite(self, where: str, flat: np.ndarray | None = None) -> None:
        """Raise ``NonFiniteParametersError`` naming the first parameter tensor holding NaN or inf.

        Called where a result would otherwise be silently meaningless: saving, evaluating,
        decoding and every probe. (Writes through ``flat`` or ``parameters()`` views are not
        checked when they happen: a view cannot intercept item assignment.) ``flat``: check a
        copy laid out like ``self.flat`` instead of the live buffer.
        """
        flat = self._flat if flat is None else flat
        if np.isfinite(flat).all():  # the common case: one vectorised pass
            return
        for t in self._tensors:
            bad = ~np.isfinite(self._view(flat, t))
            if bad.any():
                first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
                raise NonFiniteParametersError(
                    f"{where}: parameter {t['name']!r} holds non-finite values ({int(bad.sum())} of {bad.size} "
                    f"entries NaN or inf, first at index {first}); reload or reinitialize the model")

    # ---- copies and files -------------------------------------------------------------------
    def _constructor_args(self, **overrides):
        args = dict(self._config)
        args.update(overrides)
        return args

    def astype(self, dtype: DType) -> _EngineModel:
        """A copy with parameters converted to ``dtype`` (e.g. probe a float32 model in float64)."""
        other = type(self)(**self._constructor_args(dtype=np.dtype(dtype).name))
        source = self.flat_snapshot()
        if other.dtype == self.dtype:
            other._flat[...] = source
        else:  # refuse float64 parameters beyond float32's range rather than turn them into inf
            other._flat[...] = as_finite_array(source, f"parameters in {other.dtype.name}", other.dtype)
        return other

    def copy(self) -> _EngineModel:
        """An independent copy (its own engine model and buffers; gradients are not copied)."""
        return self.astype(self.dtype)

    # copy.copy must not share the parameter buffer with the original (a shallow copy of the
    # Python object would); copy.deepcopy and pickle rebuild from the config and the parameters
    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo: dict) -> _EngineModel:
        return self.copy()

    def __reduce__(self):
        return _restore_model, (type(self), self.config, self.flat_snapshot())

    def reinitialize(self, seed: int | None = None) -> None:
        """Draw fresh initial parameters (with ``seed``, default the constructor's)."""
        seed = self._config["seed"] if seed is None else check_seed(seed)
        self._engine.reinit(seed=seed, identical_layers=self._config["identical_layers"])

    def save(self, path: PathLike) -> None:
        """Write the config and parameters to an ``.npz`` file (no pickle); ``sensiformer.load`` reads it.

        Non-finite parameters raise ``FloatingPointError`` (``load`` would refuse the file).
        """
        flat = self.flat_snapshot()
        self.require_finite("save", flat)
        arrays = {f"param/{t['name']}": self._view(flat, t) for t in self._tensors}
        meta = json.dumps(dict(format_version=FORMAT_VERSION, kind=self._kind_name, config=self._config))
        save_npz_atomically(path, {"__meta__": np.array(meta), **arrays})


    # ---- losses: one implementation for both kinds (each class checks its data: _probe_data) ----
    def _loss(self, x, y, decoder_input, loss, grad, n_threads):
        check_choice(loss, "loss", tuple(LOSSES))
        x, dec, y = self._probe_data(x, y, decoder_input)
        if loss == "bce" and not np.all((y >= 0) & (y <= 1)):
            raise ValueError("loss='bce' needs labels in [0, 1]")
        return _native.loss_and_grad(model=self._engine, x=x, y=y, decoder_input=dec, loss=LOSSES[loss], grad=grad,
                                     n_threads=resolve_threads(n_threads))

    def loss(self, x: ArrayLike, y: ArrayLike, decoder_input: ArrayLike | None = None, *, loss: str = "mse",
             n_threads: int | None = None) -> float:
        """Mean loss of the model's outputs against labels ``y`` (MSE on raw outputs, or BCE with logits).

        A ``Transformer`` has one label per row, ``y`` (batch,), and no decoder input. A
        ``Seq2SeqTransformer`` is teacher-forced: ``y`` (batch, L) labels decoder positions 0..L-1 and
        ``decoder_input`` defaults to ``[SOS, y_1..y_L]`` (the official teacher forcing; only its
        first L positions reach the loss).
        """
        return self._loss(x, y, decoder_input, loss, False, n_threads)[0]

    def loss_and_grad(self, x: ArrayLike, y: ArrayLike, decoder_input: ArrayLike | None = None, *, loss: str = "mse",
                      n_threads: int | None = None) -> tuple[float, OrderedDict[str, np.ndarray]]:
        """``(loss, gradients)`` of ``loss``: the gradients as a dict of arrays (copies) keyed like
        ``parameters()``. The model's gradient buffer (``gradients()``, ``flat_grad``) holds them too.
        """
        value, _ = self._loss(x, y, decoder_input, loss, True, n_threads)
        return value, OrderedDict((name, g.copy()) for name, g in self._grads.items())


class Transformer(_EngineModel):
    """Encoder-only transformer on 0/1 tokens with a scalar readout at the last position.

    The architecture is the official ``TorchModel``: token embedding (2 -> d/2) concatenated
    with a learned positional embedding (n_positions -> d/2), ``n_layers`` encoder layers
    (multi-head self-attention without mask, FFN, residuals, LayerNorm) and ``Linear(d, 1)``
    read at the last position.

    Parameters
    ----------
    n_positions : int
        Longest input; rows of the positional table.
    d_model : int
        Width (even, divisible by ``n_heads``).
    n_heads, n_layers : int
    d_ff : int, optional
        FFN width (default ``d_model``, as the paper).
    norm : {"post", "pre", "none"}
        Norm placement ("post" is ``nn.TransformerEncoderLayer``'s default).
    norm_type : {"layer", "rms"}
        Which norm: ``nn.LayerNorm`` (the paper's) or ``nn.RMSNorm`` (a gain, no bias, no centring).
    positional : {"concat", "add", "sinusoidal", "none", "rope"}
        How positions enter: the paper's learned table concatenated with the token embedding (each
        d/2 wide); a learned table added to a full-width token embedding; the original
        transformer's fixed sinusoids added; none (the model then sees a multiset of tokens); or
        rope: rotary embeddings of each self-attention head's queries and keys (rotate-half
        convention), with a full-width token table and no positional tensor.
    rope_base : float
        RoPE's base (head pair i turns by position / rope_base^(2i / d_head)); 10000 as in RoFormer.
    ln_eps : float
        The norms' epsilon (>= 0; 0 is allowed).
    activation : {"relu", "gelu", "gelu_tanh"}
        FFN activation; "gelu" is PyTorch's exact erf form.
    dtype : {"float32", "float64"}
    seed : int
        Initialisation seed (PyTorch's init distributions, not its random bits).
    final_norm : bool
        LayerNorm after the stack (only with ``norm="pre"``).
    identical_layers : bool
        Start every layer as a copy of the first, as ``nn.TransformerEncoder`` does (default).
    """

    _kind_name = "Transformer"

    def _probe_inputs(self, x, decoder_input, y, what):
        """(x, decoder input) of a forward-only probe: the encoder takes no decoder input."""
        if decoder_input is not None or y is not None:
            raise TypeError("decoder_input and y are for a Seq2SeqTransformer")
        return as_tokens(x, "x", self.n_positions), None

    def _ln_names(self):
        """The LayerNorms ``probes.ln_blowup`` reports, in its order."""
        c = self._config
        if c["norm"] == "none":
            return []
        names = [f"encoders.layers.{i}.norm{j}" for i in range(c["n_layers"]) for j in (1, 2)]
        return names + (["encoders.norm"] if c["final_norm"] else [])

    def _ln_groups(self):
        """(key prefix, rows) of the blowup's aggregates: one group, every LayerNorm."""
        return [("", slice(None))]

    def _attention_modules(self):
        """The attention modules ``probes.attention_logit_scale`` reports (None: one per layer, unnamed)."""
        return None

    def _probe_data(self, x, y, decoder_input):
        if decoder_input is not None:
            raise TypeError("decoder_input is for a Seq2SeqTransformer")
        x = as_tokens(x, "x", self.n_positions)
        return x, None, as_values(y, "y", x.shape[0], self.dtype)

    def __init__(self, n_positions: int, *, d_model: int = 128, n_heads: int = 2, n_layers: int = 2,
                 d_ff: int | None = None, norm: str = "post", ln_eps: float = 1e-5, activation: str = "relu",
                 dtype: DType = "float32", seed: int = 0, final_norm: bool = False,
                 identical_layers: bool = True, norm_type: str = "layer", positional: str = "concat",
                 rope_base: float = 10000.0) -> None:
        n_positions, d_model, n_heads, n_layers, d_ff = check_sizes(n_positions, d_model, n_heads, n_layers, d_ff)
        check_choice(norm, "norm", tuple(NORMS))
        check_choice(norm_type, "norm_type", tuple(NORM_TYPES))
        check_choice(positional, "positional", tuple(POSITIONALS))
        rope_base = check_float(rope_base, "rope_base", 0.0)
        if rope_base == 0:
            raise ValueError("rope_base must be > 0, got 0.0")
        ln_eps = check_float(ln_eps, "ln_eps", 0.0)
        check_choice(activation, "activation", tuple(ACTIVATIONS))
        dtype = _dtype_name(dtype)
        seed = check_seed(seed)
        final_norm = check_bool(final_norm, "final_norm")
        identical_layers = check_bool(identical_layers, "identical_layers")
        if final_norm and norm != "pre":
            raise ValueError("final_norm=True needs norm='pre'")
        self._config = dict(n_positions=n_positions, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                            d_ff=d_ff, norm=norm, ln_eps=ln_eps, activation=activation, dtype=dtype,
                            seed=seed, final_norm=bool(final_norm), identical_layers=bool(identical_layers),
                            norm_type=norm_type, positional=positional,
                            rope_base=rope_base)
        self._engine = _native.Model(n_positions=n_positions, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                                     d_ff=d_ff, norm=NORMS[norm], final_norm=final_norm, ln_eps=ln_eps,
                                     activation=ACTIVATIONS[activation], dtype=DTYPES[dtype], seed=seed,
                                     identical_layers=identical_layers, norm_type=NORM_TYPES[norm_type],
                                     positional=POSITIONALS[positional], rope_base=rope_base)
        self._bind_buffers()

    def __repr__(self):
        c = self._config
        return (f"Transformer(n_positions={c['n_positions']}, d_model={c['d_model']}, n_heads={c['n_heads']}, "
                f"n_layers={c['n_layers']}, d_ff={c['d_ff']}, norm={c['norm']!r}{_options_repr(c)}, "
                f"dtype={c['dtype']!r}, params={self.num_parameters})")

    # ---- computation ------------------------------------------------------------------------
    def forward(self, x: ArrayLike, *, n_threads: int | None = None) -> np.ndarray:
        """Outputs (batch,) for tokens ``x`` (batch, length), length <= n_positions."""
        x = as_tokens(x, "x", self.n_positions)
        return _native.forward(model=self._engine, x=x, n_threads=resolve_threads(n_threads))

    __call__ = forward


def _restore_model(cls, config, flat):
    """Unpickle a model: build it from its config and write its parameters (as pickled, bit for bit)."""
    model = cls(**config)
    flat = np.asarray(flat)
    if flat.shape != model._flat.shape or flat.dtype != model.dtype:
        raise ValueError(f"pickled parameters {flat.dtype}{flat.shape} do not fit {model!r}")
    model._flat[...] = flat
    return model


_PAPER_OPTIONS = {"norm_type": "layer", "positional": "concat", "rope_base": 10000.0}


def _options_repr(config):
    """A model's options that differ from the paper's, for its repr (", norm_type='rms'")."""
    return "".join(f", {key}={config.get(key, paper)!r}" for key, paper in _PAPER_OPTIONS.items()
                   if config.get(key, paper) != paper)


def check_sizes(n_positions: int, d_model: int, n_heads: int, n_layers: int,
                d_ff: int | None) -> tuple[int, int, int, int, int]:
    """The size arguments every model kind shares, within the engine's limits (csrc/model.c)."""
    n_positions = check_int(n_positions, "n_positions", 1, MAX_POSITIONS)
    d_model = check_int(d_model, "d_model", 2, MAX_D_MODEL)
    if d_model % 2:
        raise ValueError(f"d_model must be even (token and position halves), got {d_model}")
    n_heads = check_int(n_heads, "n_heads", 1)
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    n_layers = check_int(n_layers, "n_layers", 1, MAX_LAYERS)
    d_ff = d_model if d_ff is None else check_int(d_ff, "d_ff", 1, MAX_D_FF)
    return n_positions, d_model, n_heads, n_layers, d_ff


def _dtype_name(dtype):
    if isinstance(dtype, str):
        return check_choice(dtype, "dtype", tuple(DTYPES))
    if isinstance(dtype, (np.dtype, type)):
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
        return check_choice(name, "dtype", tuple(DTYPES))
    raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def check_format_version(found: object, supported: int) -> None:
    """Refuse a file format this version cannot read (a newer file needs a newer sensiformer)."""
    if found != supported:
        from . import __version__

        newer = isinstance(found, int) and not isinstance(found, bool) and found > supported
        raise ValueError(f"format_version {found!r}, but sensiformer {__version__} reads format_version {supported}"
                         + (" (the file was written by a newer sensiformer: upgrade to read it)" if newer else ""))


def load(path: PathLike) -> Transformer | Seq2SeqTransformer:
    """Load a model written by ``save`` (a ``Transformer`` or a ``Seq2SeqTransformer``).

    A file that is not one ``save`` wrote (damaged, or with other metadata) raises ``ValueError``
    naming it.
    """
    try:
        with open(path, "rb") as fh:
            data = np.load(fh, allow_pickle=False)
            if not hasattr(data, "files"):
                raise ValueError("an .npy array, not an .npz archive")
            with data:
                contents = {k: data[k] for k in data.files}
    except (FileNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # NumPy's header parser raises whatever a damaged header provokes
        raise ValueError(f"{path} is not a readable sensiformer model file ({type(err).__name__}: {err})") from err
    if "__meta__" not in contents:
        raise ValueError(f"{path} is not a sensiformer model file")
    kinds = _EngineModel._classes
    try:
        meta = json.loads(str(contents["__meta__"]))
        if not isinstance(meta, dict):
            raise ValueError(f"the metadata is a {type(meta).__name__}, not a dict")
        check_format_version(meta.get("format_version"), FORMAT_VERSION)
        if meta.get("kind") not in kinds:
            raise ValueError(f"it holds a {meta.get('kind')!r}, not a Transformer or a Seq2SeqTransformer")
        if not isinstance(meta.get("config"), dict):
            raise ValueError(f"its config is {meta.get('config')!r}, not a dict")
        model = kinds[meta["kind"]](**meta["config"])
        model.load_state_dict({k[len("param/"):]: v for k, v in contents.items() if k.startswith("param/")})
    except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a valid sensiformer model file ({type(err).__name__}: {err})") from err
    return model
