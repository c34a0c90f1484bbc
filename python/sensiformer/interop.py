"""PyTorch interop: the official architectures as ``torch.nn.Module``s, and conversions.

``TorchReference`` is Hahn & Rofin's ``TorchModel`` (src/model.py of the official code) with
sensiformer's options (pre/post/no LayerNorm, eps, GELU, d_ff, final norm). Its
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
                     ln_eps=1e-5, activation="relu", final_norm=False, **_ignored):
            super().__init__()
            d_ff = d_model if d_ff is None else d_ff
            self.embedding = nn.Embedding(2, d_model // 2)
            self.positional_encoding = nn.Embedding(n_positions, d_model // 2)
            act = {"relu": "relu", "gelu": "gelu", "gelu_tanh": lambda t: nn.functional.gelu(t, approximate="tanh")}
            layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=n_heads, dim_feedforward=d_ff, dropout=0.0,
                                               activation=act[activation], layer_norm_eps=ln_eps, batch_first=True,
                                               norm_first=norm == "pre")
            final = nn.LayerNorm(d_model, eps=ln_eps) if final_norm else None
            self.encoders = nn.TransformerEncoder(layer, n_layers, norm=final, enable_nested_tensor=False)
            if norm == "none":
                for lyr in self.encoders.layers:
                    lyr.norm1, lyr.norm2 = nn.Identity(), nn.Identity()
            self.linear_head = nn.Linear(d_model, 1, bias=True)

        def forward(self, x):
            positional = self.positional_encoding(torch.arange(x.size(1), device=x.device)).repeat(x.size(0), 1, 1)
            h = torch.cat([self.embedding(x), positional], dim=-1)
            h = self.encoders(h)
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
                     norm="post", ln_eps=1e-5, activation="relu", **_ignored):
            super().__init__()
            d_ff = d_model if d_ff is None else d_ff
            n_decoder_layers = n_layers if n_decoder_layers is None else n_decoder_layers
            self.embedding = nn.Embedding(3, d_model // 2)
            self.positional_encoding = nn.Embedding(n_positions + 1, d_model // 2)
            act = {"relu": "relu", "gelu": "gelu", "gelu_tanh": lambda t: nn.functional.gelu(t, approximate="tanh")}
            with warnings.catch_warnings():  # pre-LN: torch notes it cannot use nested tensors (irrelevant here)
                warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
                self.model = nn.Transformer(d_model=d_model, nhead=n_heads, num_encoder_layers=n_layers,
                                            num_decoder_layers=n_decoder_layers, dim_feedforward=d_ff, dropout=0.0,
                                            activation=act[activation], layer_norm_eps=ln_eps, batch_first=True,
                                            norm_first=norm == "pre")
            self.linear_head = nn.Linear(d_model, 1, bias=True)

        def prepare_tensors(self, x, y):
            def embed(tokens):
                pos = self.positional_encoding(torch.arange(tokens.size(1), device=tokens.device))
                return torch.cat([self.embedding(tokens), pos.repeat(tokens.size(0), 1, 1)], dim=-1)

            return embed(x), embed(y)

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


def to_torch(model, dtype=None):
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


def from_torch(module, n_positions=None, **config):
    """A sensiformer ``Transformer`` (or, for a ``TorchModelWithScratchpad``-shaped module, a
    ``Seq2SeqTransformer``) with the weights of an official-architecture module.

    The architecture is read from the module's tensors where possible (``d_model``,
    ``n_layers``, ``n_decoder_layers``, ``n_positions``, ``d_ff``); pass ``n_heads``, ``norm``
    etc. when they differ from the defaults.
    """
    from .model import Transformer

    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    if "model.encoder.norm.weight" in state:
        return _seq2seq_from_state(state, n_positions, config)
    d_model = state["linear_head.weight"].shape[1]
    n_layers = len({k.split(".")[2] for k in state if k.startswith("encoders.layers.")})
    args = dict(n_positions=n_positions or state["positional_encoding.weight"].shape[0], d_model=d_model,
                n_layers=n_layers, d_ff=state["encoders.layers.0.linear1.weight"].shape[0],
                final_norm="encoders.norm.weight" in state)
    if args["final_norm"]:
        config.setdefault("norm", "pre")
    args.update(config)
    args.setdefault("dtype", "float64" if state["linear_head.weight"].dtype.itemsize == 8 else "float32")
    model = Transformer(**args)
    model.load_state_dict(state)
    return model


def _seq2seq_from_state(state, n_positions, config):
    from .seq2seq import Seq2SeqTransformer

    def count(prefix):
        return len({k.split(".")[3] for k in state if k.startswith(prefix)})

    args = dict(n_positions=n_positions or state["positional_encoding.weight"].shape[0] - 1,
                d_model=state["linear_head.weight"].shape[1], n_layers=count("model.encoder.layers."),
                n_decoder_layers=count("model.decoder.layers."),
                d_ff=state["model.encoder.layers.0.linear1.weight"].shape[0])
    args.update(config)
    args.setdefault("dtype", "float64" if state["linear_head.weight"].dtype.itemsize == 8 else "float32")
    model = Seq2SeqTransformer(**args)
    model.load_state_dict(state)
    return model
