"""PyTorch interop: the official architecture as a ``torch.nn.Module``, and conversions.

``TorchReference`` is Hahn & Rofin's ``TorchModel`` (src/model.py of the official code) with
sensiformer's options (pre/post/no LayerNorm, eps, GELU, d_ff, final norm). Its
``state_dict()`` keys are the official ones, so weights move both ways unchanged. PyTorch is
imported lazily: only these functions need it.
"""

from __future__ import annotations


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


def to_torch(model, dtype=None):
    """A ``torch.nn.Module`` computing the same function as ``model`` (weights copied).

    ``dtype`` defaults to the model's; the module is in training mode (dropout is 0), which
    keeps PyTorch off its inference fast path.
    """
    torch = _torch()
    cls = reference_module_class()
    module = cls(**model.config)
    dtype = dtype or {"float32": torch.float32, "float64": torch.float64}[model.config["dtype"]]
    module = module.to(dtype)
    with torch.no_grad():
        state = {k: torch.from_numpy(v.copy()).to(dtype) for k, v in model.state_dict().items()}
        module.load_state_dict(state, strict=True)
    return module


def from_torch(module, n_positions=None, **config):
    """A sensiformer ``Transformer`` with the weights of an official-architecture module.

    The architecture is read from the module's tensors where possible (``d_model``,
    ``n_layers``, ``n_positions``, ``d_ff``); pass ``n_heads``, ``norm`` etc. when they differ
    from the defaults.
    """
    from .model import Transformer

    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
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
