"""PyTorch interop: the official architectures as ``torch.nn.Module``s, and conversions.

``TorchReference`` is Hahn & Rofin's ``TorchModel`` (src/model.py of the official code) with
sensiformer's options (pre/post/no LayerNorm, eps, GELU, d_ff, final norm, RMSNorm). Its
``state_dict()`` keys are the official ones, so weights move both ways unchanged;
``TorchScratchpadReference`` is ``TorchModelWithScratchpad`` likewise. PyTorch is
imported lazily: only these functions need it.
"""

from __future__ import annotations

import warnings


def _torch():
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("sensiformer.interop needs PyTorch (pip install 'sensiformer[test]')") from err
    return torch


def _use_rms_norms(module, d_model, eps):
    """Replace every nn.LayerNorm inside ``module`` by an nn.RMSNorm(d_model, eps) (norm_type="rms")."""
    nn = _torch().nn
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(parent, name, nn.RMSNorm(d_model, eps=eps))


def _rotary_attention_class():
    """nn.MultiheadAttention (the same parameters) whose queries and keys turn by rotary position
    embeddings (rotate-half per head, rows at positions 0..): sensiformer's positional="rope" for
    self-attention."""
    global _RotaryAttention
    if _RotaryAttention is not None:
        return _RotaryAttention
    torch = _torch()
    F = torch.nn.functional

    class RotaryMultiheadAttention(torch.nn.MultiheadAttention):
        def __init__(self, embed_dim, num_heads, rope_base=10000.0):
            super().__init__(embed_dim, num_heads, dropout=0.0, batch_first=True)
            self.rope_base = rope_base

        def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None,
                    average_attn_weights=True, is_causal=False):
            d, H = self.embed_dim, self.num_heads
            dh, (B, Tq), Tk = d // H, query.shape[:2], key.size(1)
            w, b = self.in_proj_weight, self.in_proj_bias
            q, k, v = (F.linear(t, w[i * d:(i + 1) * d], b[i * d:(i + 1) * d]).view(B, -1, H, dh).transpose(1, 2)
                       for i, t in enumerate((query, key, value)))
            q, k = _rotate(q, self.rope_base), _rotate(k, self.rope_base)
            scores = q @ k.transpose(-1, -2) / dh ** 0.5
            if attn_mask is not None:
                scores = scores.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
                    else scores + attn_mask
            elif is_causal:
                scores = scores.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool).triu(1), float("-inf"))
            ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, Tq, d)
            return self.out_proj(ctx), None

    _RotaryAttention = RotaryMultiheadAttention
    return RotaryMultiheadAttention


_RotaryAttention = None


def _rotate(x, base):
    """Rotate-half RoPE of (batch, heads, length, dh) rows at positions 0..length-1."""
    torch = _torch()
    half = x.size(-1) // 2
    t = torch.arange(x.size(-2), dtype=torch.float64)[:, None]
    angle = (t * base ** (-torch.arange(half, dtype=torch.float64) / half)).to(x.dtype)
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def _slow_path_only(layers):
    """Keep nn.TransformerEncoderLayer off its fused inference path, which reads LayerNorm biases
    and the stock attention directly (wrong or failing for other norms and rotary attention)."""
    for layer in layers:
        layer.activation_relu_or_gelu = 0


def _positional_tables(module, positional, tokens, positions, d_model):
    """The embedding tables of a reference module: token (and learned positional) tables of width
    d/2 (concat) or d, or the fixed sinusoids as a non-persistent buffer (state_dict() leaves it out)."""
    torch = _torch()
    width = d_model // 2 if positional == "concat" else d_model
    module.positional = positional
    module.embedding = torch.nn.Embedding(tokens, width)  # (rope: the token table alone; the layers turn q, k)
    if positional in ("concat", "add"):
        module.positional_encoding = torch.nn.Embedding(positions, width)
    elif positional == "sinusoidal":
        t = torch.arange(positions, dtype=torch.float64)[:, None]
        rate = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
        table = torch.zeros(positions, d_model, dtype=torch.float64)
        table[:, 0::2], table[:, 1::2] = torch.sin(t * rate), torch.cos(t * rate)
        module.register_buffer("sinusoid", table, persistent=False)


def _embed(module, tokens):
    """Embed (batch, length) tokens as the module's ``positional`` says."""
    torch = _torch()
    t = torch.arange(tokens.size(1), device=tokens.device)
    if module.positional == "concat":
        return torch.cat([module.embedding(tokens), module.positional_encoding(t).repeat(tokens.size(0), 1, 1)], dim=-1)
    if module.positional == "add":
        return module.embedding(tokens) + module.positional_encoding(t)
    if module.positional == "sinusoidal":
        return module.embedding(tokens) + module.sinusoid[:tokens.size(1)]
    return module.embedding(tokens)


def reference_module_class():
    """The ``TorchReference`` class (defined on first use so importing needs no torch)."""
    global _TorchReference
    if _TorchReference is not None:
        return _TorchReference
    torch = _torch()
    nn = torch.nn

    class TorchReference(nn.Module):
        """The official encoder model in PyTorch, keyed like sensiformer's ``state_dict()``."""

        def __init__(self, n_positions, d_model=128, n_heads=2, n_layers=2, d_ff=None, norm="post",
                     ln_eps=1e-5, activation="relu", final_norm=False, norm_type="layer", positional="concat",
                     rope_base=10000.0, **_ignored):
            super().__init__()
            d_ff = d_model if d_ff is None else d_ff
            _positional_tables(self, positional, 2, n_positions, d_model)
            act = {"relu": "relu", "gelu": "gelu", "gelu_tanh": _gelu_tanh}
            layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=n_heads, dim_feedforward=d_ff, dropout=0.0,
                                               activation=act[activation], layer_norm_eps=ln_eps, batch_first=True,
                                               norm_first=norm == "pre")
            final = nn.LayerNorm(d_model, eps=ln_eps) if final_norm else None
            self.encoders = nn.TransformerEncoder(layer, n_layers, norm=final, enable_nested_tensor=False)
            if norm == "none":
                for lyr in self.encoders.layers:
                    lyr.norm1, lyr.norm2 = nn.Identity(), nn.Identity()
            if norm_type == "rms":
                _use_rms_norms(self.encoders, d_model, ln_eps)
            for lyr in self.encoders.layers if positional == "rope" else ():
                lyr.self_attn = _rotary_attention_class()(d_model, n_heads, rope_base)
            if norm == "none" or norm_type == "rms" or positional == "rope":
                _slow_path_only(self.encoders.layers)
            self.linear_head = nn.Linear(d_model, 1, bias=True)

        def forward(self, x):
            h = self.encoders(_embed(self, x))
            return self.linear_head(h)[:, -1, :].view(-1)

    _TorchReference = TorchReference
    return TorchReference


_TorchReference = None


def scratchpad_module_class():
    """The ``TorchScratchpadReference`` class: the official ``TorchModelWithScratchpad`` (an
    ``nn.Transformer`` between a shared embedding and a readout at every decoder position) with
    sensiformer's options, keyed like ``Seq2SeqTransformer.state_dict()``."""
    global _TorchScratchpad
    if _TorchScratchpad is not None:
        return _TorchScratchpad
    torch = _torch()
    nn = torch.nn

    class TorchScratchpadReference(nn.Module):
        """The official scratchpad encoder-decoder in PyTorch."""

        def __init__(self, n_positions, d_model=32, n_heads=2, n_layers=2, n_decoder_layers=None, d_ff=None,
                     norm="post", ln_eps=1e-5, activation="relu", norm_type="layer", positional="concat",
                     rope_base=10000.0, **_ignored):
            super().__init__()
            d_ff = d_model if d_ff is None else d_ff
            n_decoder_layers = n_layers if n_decoder_layers is None else n_decoder_layers
            _positional_tables(self, positional, 3, n_positions + 1, d_model)
            act = {"relu": "relu", "gelu": "gelu", "gelu_tanh": _gelu_tanh}
            with warnings.catch_warnings():  # pre-LN: torch notes it cannot use nested tensors (irrelevant here)
                warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
                self.model = nn.Transformer(d_model=d_model, nhead=n_heads, num_encoder_layers=n_layers,
                                            num_decoder_layers=n_decoder_layers, dim_feedforward=d_ff, dropout=0.0,
                                            activation=act[activation], layer_norm_eps=ln_eps, batch_first=True,
                                            norm_first=norm == "pre")
            if norm_type == "rms":
                _use_rms_norms(self.model, d_model, ln_eps)
            if positional == "rope":  # self-attention turns its queries and keys; cross-attention does not
                for lyr in list(self.model.encoder.layers) + list(self.model.decoder.layers):
                    lyr.self_attn = _rotary_attention_class()(d_model, n_heads, rope_base)
            if norm_type == "rms" or positional == "rope":
                _slow_path_only(self.model.encoder.layers)
            self.linear_head = nn.Linear(d_model, 1, bias=True)

        def prepare_tensors(self, x, y):
            return _embed(self, x), _embed(self, y)

        def forward(self, x, y):
            xe, ye = self.prepare_tensors(x, y)
            mask = self.model.generate_square_subsequent_mask(ye.size(1), dtype=ye.dtype, device=ye.device)
            return self.linear_head(self.model(xe, ye, tgt_mask=mask)).squeeze(-1)

        def autoregressive_answer(self, x):
            """The official decoding: the whole model again at every step."""
            y = torch.full((x.size(0), 1), 2, dtype=torch.long, device=x.device)
            for _ in range(x.size(1)):
                out = self(x, y)
                y = torch.cat([y, (out[:, -1:] > 0.5).long()], dim=1)
            return y[:, 1:]

    _TorchScratchpad = TorchScratchpadReference
    return TorchScratchpadReference


_TorchScratchpad = None


def to_torch(model, *, dtype=None):
    """A ``torch.nn.Module`` computing the same function as ``model`` (weights copied): for a
    ``Transformer`` the official ``TorchModel``, for a ``Seq2SeqTransformer`` the official
    ``TorchModelWithScratchpad`` (``forward(x, decoder_input)``).

    ``dtype`` defaults to the model's; the module is in training mode (dropout is 0), which
    keeps PyTorch off its inference fast path.
    """
    from .seq2seq import Seq2SeqTransformer

    torch = _torch()
    cls = scratchpad_module_class() if isinstance(model, Seq2SeqTransformer) else reference_module_class()
    module = cls(**model.config)
    dtype = dtype or {"float32": torch.float32, "float64": torch.float64}[model.config["dtype"]]
    module = module.to(dtype)
    with torch.no_grad():
        state = {k: torch.from_numpy(v.copy()).to(dtype) for k, v in model.state_dict().items()}
        module.load_state_dict(state, strict=True)
    return module


def from_torch(module, *, n_positions=None, **config):
    """A sensiformer ``Transformer`` (or, for a ``TorchModelWithScratchpad``-shaped module, a
    ``Seq2SeqTransformer``) computing the same function as an official-architecture module, with
    its weights.

    The architecture is read from the module: sizes (``d_model``, ``n_layers``,
    ``n_decoder_layers``, ``n_positions``, ``d_ff``) from its tensors, and from its
    ``nn.TransformerEncoderLayer``/``nn.TransformerDecoderLayer``s the number of heads
    (``self_attn.num_heads``), the LayerNorm placement (``norm_first``, or ``nn.Identity`` norms
    for ``norm="none"``), ``ln_eps`` and the activation. Arguments given in ``config`` must agree
    with what the module says (a ``ValueError`` names any that contradict it); for layers of
    other types, which cannot be read, ``n_heads``, ``norm``, ``ln_eps`` and ``activation`` must
    be given. ``dtype`` defaults to the tensors'; ``seed`` and ``identical_layers`` are free.
    Dropout is ignored (sensiformer has none: the module's function in ``eval()`` mode).
    """
    from .model import Transformer

    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    if "model.encoder.norm.weight" in state:
        return _seq2seq_from_state(module, state, n_positions, config)
    for key in ("linear_head.weight", "encoders.layers.0.linear1.weight"):
        if key not in state:
            raise ValueError(f"module has no {key!r}: not the official TorchModel layout (embedding, "
                             "positional_encoding, encoders, linear_head)")
    n_layers = len({k.split(".")[2] for k in state if k.startswith("encoders.layers.")})
    if n_positions is None and "positional_encoding.weight" not in state:
        raise ValueError("the module has no positional_encoding table to read n_positions from: pass n_positions")
    args = dict(n_positions=n_positions or state["positional_encoding.weight"].shape[0],
                d_model=state["linear_head.weight"].shape[1], n_layers=n_layers,
                positional=_positional_of(module, state, config),
                d_ff=state["encoders.layers.0.linear1.weight"].shape[0], final_norm="encoders.norm.weight" in state)
    encoders = getattr(module, "encoders", None)
    layers = list(getattr(encoders, "layers", []))
    args.update(_layer_settings(layers, config, "encoders.layers"))
    if args["final_norm"]:
        if args.get("norm", config.get("norm")) != "pre":
            raise ValueError("the module has a final LayerNorm (encoders.norm) after post-LN layers; sensiformer's "
                             "final_norm needs norm='pre'")
        args["ln_eps"] = _final_norm_eps(encoders.norm, args, config)
    model = Transformer(**_merged(args, config, state))
    model.load_state_dict(state)
    return model


def _positional_of(module, state, given):
    """How the module embeds positions: from the tables' widths when it learns them, else from a
    reference module's ``positional`` (fixed sinusoids and no positions have the same tensors)."""
    d_model = state["linear_head.weight"].shape[1]
    if "positional_encoding.weight" in state:
        return "concat" if state["positional_encoding.weight"].shape[1] * 2 == d_model else "add"
    if any(type(m).__name__ == "RotaryMultiheadAttention" for m in module.modules()):
        return "rope"
    if getattr(module, "positional", None) in ("sinusoidal", "none"):
        return module.positional
    if given.get("positional") in ("sinusoidal", "none", "rope"):
        return given["positional"]
    raise ValueError("the module has no positional_encoding table: pass positional='sinusoidal', 'none' or 'rope' "
                     "(the tensors cannot tell them apart)")


def _merged(read, given, state):
    """The settings read from the module, with the caller's ``config`` (which must agree)."""
    for key, value in given.items():
        if key in read and read[key] != value:
            raise ValueError(f"{key}={value!r} contradicts the module, which has {key}={read[key]!r}")
    args = dict(read, **given)
    args.setdefault("dtype", "float64" if state["linear_head.weight"].dtype.itemsize == 8 else "float32")
    return args


def _gelu_tanh(t):
    """GELU with the tanh approximation (``TorchReference``'s activation for "gelu_tanh")."""
    return _torch().nn.functional.gelu(t, approximate="tanh")


def _activation_name(fn):
    """"relu", "gelu" or "gelu_tanh" for the activations sensiformer has, else None."""
    import functools

    F = _torch().nn.functional
    nn = _torch().nn
    if fn is F.relu or isinstance(fn, nn.ReLU):
        return "relu"
    if fn is F.gelu or (isinstance(fn, nn.GELU) and fn.approximate == "none"):
        return "gelu"
    if fn is _gelu_tanh or (isinstance(fn, nn.GELU) and fn.approximate == "tanh"):
        return "gelu_tanh"
    tanh_partial = isinstance(fn, functools.partial) and fn.func is F.gelu and not fn.args
    if tanh_partial and fn.keywords == {"approximate": "tanh"}:
        return "gelu_tanh"
    return None


def _one_layer_settings(layer, name, stated_activation=None):
    """n_heads, norm, ln_eps and activation of one nn.Transformer{Encoder,Decoder}Layer (an
    activation function that cannot be recognised is taken from ``stated_activation``)."""
    nn = _torch().nn
    norms = [getattr(layer, n) for n in ("norm1", "norm2", "norm3") if hasattr(layer, n)]
    norm_type = "layer"
    if all(isinstance(n, nn.Identity) for n in norms):
        norm, eps = "none", None
    elif all(isinstance(n, nn.LayerNorm) for n in norms):
        epss = {n.eps for n in norms}
        if len(epss) > 1 or any(not n.elementwise_affine or n.bias is None for n in norms):
            raise ValueError(f"{name}: LayerNorms with different eps or without affine weights and biases are not "
                             "supported")
        norm, eps = ("pre" if layer.norm_first else "post"), epss.pop()
    elif all(isinstance(n, nn.RMSNorm) for n in norms):
        epss = {n.eps for n in norms}
        if len(epss) > 1 or None in epss or any(n.weight is None for n in norms):
            raise ValueError(f"{name}: RMSNorms need one explicit eps (eps=None depends on the dtype) and a weight")
        norm, eps, norm_type = ("pre" if layer.norm_first else "post"), epss.pop(), "rms"
    else:
        raise ValueError(f"{name}: a mix of LayerNorm, RMSNorm and other norms is not supported")
    attention = [layer.self_attn] + ([layer.multihead_attn] if hasattr(layer, "multihead_attn") else [])
    if not all(a.batch_first for a in attention):
        raise ValueError(f"{name}: batch_first=False; the official architecture runs batch_first=True")
    if any(a.in_proj_bias is None for a in attention) or layer.linear1.bias is None:
        raise ValueError(f"{name}: layers without biases (bias=False) are not supported")
    heads = {a.num_heads for a in attention}
    if len(heads) > 1:
        raise ValueError(f"{name}: self- and cross-attention with different numbers of heads are not supported")
    activation = _activation_name(layer.activation) or stated_activation
    if activation is None:
        raise ValueError(f"{name}: cannot tell which activation {layer.activation!r} is; sensiformer has relu, gelu "
                         "and gelu_tanh: pass activation= if it is one of them")
    settings = dict(n_heads=heads.pop(), norm=norm, activation=activation)
    if eps is not None:
        settings["ln_eps"], settings["norm_type"] = eps, norm_type
    if hasattr(layer.self_attn, "rope_base"):  # a rotary self-attention (positional="rope")
        settings["rope_base"] = layer.self_attn.rope_base
    return settings


def _layer_settings(layers, given, prefix):
    """The settings every layer agrees on; ``given`` may fill in an activation the module's
    layers do not name, and must supply everything for layers that are not PyTorch's."""
    nn = _torch().nn
    known = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
    if not layers or not all(isinstance(layer, known) for layer in layers):
        missing = [k for k in ("n_heads", "norm", "ln_eps", "activation") if k not in given]
        if missing:
            raise ValueError(f"cannot read the configuration from the module ({prefix} are not "
                             f"nn.TransformerEncoderLayer/nn.TransformerDecoderLayer): pass {', '.join(missing)}")
        return {}
    found = [_one_layer_settings(layer, f"{prefix}.{i}", given.get("activation")) for i, layer in enumerate(layers)]
    for key in found[0]:
        values = [f[key] for f in found]
        if len(set(values)) > 1:
            raise ValueError(f"the layers of {prefix} differ in {key} ({values}); sensiformer's layers share it")
    return found[0]


def _final_norm_eps(norm, args, given):
    nn = _torch().nn
    if not isinstance(norm, nn.RMSNorm if args.get("norm_type") == "rms" else nn.LayerNorm):
        if "ln_eps" not in given:
            raise ValueError("cannot read the final norm's eps from the module: pass ln_eps")
        return given["ln_eps"]
    if "ln_eps" in args and norm.eps != args["ln_eps"]:
        raise ValueError(f"the final LayerNorm has eps={norm.eps}, the layers' have {args['ln_eps']}; sensiformer "
                         "uses one eps")
    return norm.eps


def _seq2seq_from_state(module, state, n_positions, config):
    from .seq2seq import Seq2SeqTransformer

    def count(prefix):
        return len({k.split(".")[3] for k in state if k.startswith(prefix)})

    if n_positions is None and "positional_encoding.weight" not in state:
        raise ValueError("the module has no positional_encoding table to read n_positions from: pass n_positions")
    args = dict(n_positions=n_positions or state["positional_encoding.weight"].shape[0] - 1,
                positional=_positional_of(module, state, config),
                d_model=state["linear_head.weight"].shape[1], n_layers=count("model.encoder.layers."),
                n_decoder_layers=count("model.decoder.layers."),
                d_ff=state["model.encoder.layers.0.linear1.weight"].shape[0])
    transformer = getattr(module, "model", None)
    encoder = list(getattr(getattr(transformer, "encoder", None), "layers", []))
    decoder = list(getattr(getattr(transformer, "decoder", None), "layers", []))
    read = _layer_settings(encoder + decoder, config, "model.encoder.layers and model.decoder.layers")
    if read.get("norm") == "none":
        raise ValueError("a Seq2SeqTransformer has LayerNorms (norm 'post' or 'pre'); the module has none")
    args.update(read)
    if read:
        kind = _torch().nn.RMSNorm if read.get("norm_type") == "rms" else _torch().nn.LayerNorm
        for final in (transformer.encoder.norm, transformer.decoder.norm):
            if not isinstance(final, kind) or final.eps != read["ln_eps"]:
                raise ValueError(f"the final encoder/decoder norms must be {kind.__name__}s with the layers' eps "
                                 f"{read['ln_eps']}, got {final!r}")
    model = Seq2SeqTransformer(**_merged(args, config, state))
    model.load_state_dict(state)
    return model
