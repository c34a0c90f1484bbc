"""Helpers of the shipped self-test: random models, error measures, a NumPy forward of the official
encoder, the PyTorch reference, the CPU path in use and the fingerprints the paths are compared by.

Nothing here imports PyTorch or pytest at module level: the self-test runs on the base install.
"""

from __future__ import annotations

import math
import os

import numpy as np

import sensiformer as sf
from sensiformer._selftest import cpu_paths  # noqa: F401  (the tests' one way to ask)


# ---- CPU paths ------------------------------------------------------------------------------------
def current_path():
    """The path this process runs (``SENSIFORMER_CPU_PATH`` or the CPU's best)."""
    return sf.show_config(print_out=False)["cpu_path"]


def forced_path():
    """The path ``SENSIFORMER_CPU_PATH`` asks for, or None for the automatic choice."""
    value = os.environ.get("SENSIFORMER_CPU_PATH", "auto").strip()
    return None if value in ("", "auto") else value


# ---- models and errors ----------------------------------------------------------------------------
def randomize(model, seed=0, scale=0.5):
    """Every parameter random (LayerNorm gains near 1, so LayerNorms stay well conditioned): index
    mix-ups cannot hide behind the init's structure (unit gains, zero biases, identical layers)."""
    rng = np.random.default_rng(seed)
    model.flat[:] = rng.normal(scale=scale, size=model.flat.size)
    for name, p in model.parameters().items():
        if "norm" in name and name.endswith("weight"):
            p[:] = 1.0 + rng.uniform(-0.5, 0.5, size=p.shape)
    return model


def rel_err(ours, ref):
    """||ours - ref|| / ||ref|| (the absolute error where the reference is exactly zero)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff, scale = float(np.linalg.norm((ours - ref).ravel())), float(np.linalg.norm(ref.ravel()))
    return diff / scale if scale > 0 else diff


def tokens(rng, batch, length):
    return rng.integers(0, 2, size=(batch, length), dtype=np.uint8)


def encoder_case(dtype="float64", seed=0, **overrides):
    """A small random encoder with a batch: (model, x, y). Heads 8 wide, T=7: partial GEMM tiles."""
    config = dict(n_positions=7, d_model=16, n_heads=2, n_layers=2, d_ff=20, activation="gelu") | overrides
    model = randomize(sf.Transformer(dtype=dtype, **config), seed, scale=0.3)
    rng = np.random.default_rng(seed + 1)
    x = tokens(rng, 5, config["n_positions"])
    return model, x, rng.normal(size=5)


def seq2seq_case(dtype="float64", seed=0, **overrides):
    """A small random encoder-decoder with a teacher-forced batch: (model, x, decoder_input, y)."""
    config = dict(n_positions=6, d_model=12, n_heads=3, n_layers=2, n_decoder_layers=1, d_ff=14) | overrides
    model = randomize(sf.Seq2SeqTransformer(dtype=dtype, **config), seed, scale=0.3)
    rng = np.random.default_rng(seed + 1)
    x = tokens(rng, 4, config["n_positions"])
    y = (np.cumsum(x, axis=1) % 2).astype(np.float64)
    return model, x, model.teacher_forcing(y), y


# ---- a NumPy forward of the official encoder (the row kernels' reference) -----------------------
def _layernorm(h, weight, bias, eps):
    mean = h.mean(axis=-1, keepdims=True)
    var = ((h - mean) ** 2).mean(axis=-1, keepdims=True)
    return (h - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf; the arrays here are small


def _activation(name, z):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "gelu":
        return 0.5 * z * (1.0 + _erf(z / np.sqrt(2.0)).astype(np.float64))
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))  # gelu_tanh


def _self_attention(h, w_in, b_in, w_out, b_out, n_heads):
    B, T, d = h.shape
    dh = d // n_heads
    q, k, v = np.split(h @ w_in.T + b_in, 3, axis=-1)
    split = lambda t: t.reshape(B, T, n_heads, dh).transpose(0, 2, 1, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(dh)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    ctx = (p @ split(v)).transpose(0, 2, 1, 3).reshape(B, T, d)
    return ctx @ w_out.T + b_out


def numpy_forward(model, x):
    """The official ``TorchModel`` forward in float64 NumPy (post-, pre- or no LayerNorm; ReLU, GELU or
    tanh-GELU): every row kernel (softmax, LayerNorm, activation, readout) written out plainly."""
    c, p = model.config, {k: v.astype(np.float64) for k, v in model.parameters().items()}
    B, T = x.shape
    h = np.concatenate([p["embedding.weight"][x], np.broadcast_to(p["positional_encoding.weight"][:T],
                                                                   (B, T, c["d_model"] // 2))], axis=-1)
    for i in range(c["n_layers"]):
        q = lambda name: p[f"encoders.layers.{i}.{name}"]  # noqa: E731
        norm1 = lambda t: _layernorm(t, q("norm1.weight"), q("norm1.bias"), c["ln_eps"])  # noqa: E731
        norm2 = lambda t: _layernorm(t, q("norm2.weight"), q("norm2.bias"), c["ln_eps"])  # noqa: E731
        attend = lambda t: _self_attention(t, q("self_attn.in_proj_weight"), q("self_attn.in_proj_bias"),  # noqa: E731
                                           q("self_attn.out_proj.weight"), q("self_attn.out_proj.bias"),
                                           c["n_heads"])
        ffn = lambda t: (_activation(c["activation"], t @ q("linear1.weight").T + q("linear1.bias"))  # noqa: E731
                         @ q("linear2.weight").T + q("linear2.bias"))
        if c["norm"] == "post":
            h = norm1(h + attend(h))
            h = norm2(h + ffn(h))
        elif c["norm"] == "pre":
            h = h + attend(norm1(h))
            h = h + ffn(norm2(h))
        else:
            h = h + attend(h)
            h = h + ffn(h)
    if c["final_norm"]:
        h = _layernorm(h, p["encoders.norm.weight"], p["encoders.norm.bias"], c["ln_eps"])
    return h[:, -1] @ p["linear_head.weight"][0] + p["linear_head.bias"][0]


# ---- PyTorch --------------------------------------------------------------------------------------
def torch_reference(torch, module, inputs, y, loss="mse"):
    """The official module's outputs, loss and every parameter's gradient as float64 NumPy.

    ``inputs`` are the forward's token arrays: ``(x,)`` for the encoder (outputs (B,)), ``(x,
    decoder_input)`` for the encoder-decoder (outputs (B, S); the loss scores the first L = y.shape[1]).
    """
    module.zero_grad(set_to_none=True)
    dtype = next(module.parameters()).dtype
    out = module(*(torch.from_numpy(np.asarray(t, dtype=np.int64)) for t in inputs))
    scored = out if out.ndim == 1 else out[:, :y.shape[1]]
    target = torch.from_numpy(np.asarray(y, dtype=np.float64)).to(dtype)
    if loss == "mse":
        value = torch.nn.functional.mse_loss(scored, target)
    else:
        value = torch.nn.functional.binary_cross_entropy_with_logits(scored, target)
    value.backward()
    grads = {n: (p.grad.double().numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape)))
             for n, p in module.named_parameters()}
    return out.detach().double().numpy(), float(value.item()), grads


# ---- what the CPU paths are compared by -----------------------------------------------------------
def fingerprint():
    """Same-seed results of this process's path, keyed "<kind> <what> <dtype>": the parameters after a
    few training steps of either model kind, and the outputs and gradient of a random model on a
    fixed batch (a model wide and long enough for full GEMM tiles and the tabled attention)."""
    out = {}
    for dtype in ("float32", "float64"):
        model = sf.Transformer(8, d_model=32, n_heads=2, n_layers=2, dtype=dtype, seed=1)
        sf.Trainer(model, sf.targets.Parity(8), optimizer=sf.AdamW(lr=1e-3), batch_size=64,
                   seed=2).fit(5, progress=False)
        out[f"encoder training {dtype}"] = model.flat.copy()
        model, _, _, _ = seq2seq_case(dtype, seed=3, d_model=16, n_heads=1)
        sf.Trainer(model, sf.targets.Prefix(sf.targets.Parity(6)), optimizer=sf.AdamW(lr=1e-3), batch_size=32,
                   seed=2).fit(3, progress=False)
        out[f"seq2seq training {dtype}"] = model.flat.copy()
        model, _, _ = encoder_case(dtype, seed=4, n_positions=20, d_model=32, activation="relu")
        x = tokens(np.random.default_rng(5), 40, 20)
        out[f"encoder forward {dtype}"] = model.forward(x)
        out[f"encoder gradient {dtype}"] = np.concatenate(
            [g.ravel() for g in model.loss_and_grad(x, np.linspace(0, 1, 40))[1].values()])
        model, x, dec, y = seq2seq_case(dtype, seed=6, n_positions=12, d_model=32, n_heads=2)
        out[f"seq2seq forward {dtype}"] = model.forward(x, dec)
        out[f"seq2seq gradient {dtype}"] = np.concatenate(
            [g.ravel() for g in model.loss_and_grad(x, y, decoder_input=dec)[1].values()])
    return out
