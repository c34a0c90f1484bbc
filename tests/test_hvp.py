"""Exact Hessian-vector products: against PyTorch's double backward (float64, per parameter
block), at random parameters of many configurations and at a trained high-blowup PARITY
minimum; block restriction, float32, determinism, and a central-difference oracle."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer.blocks import block_indices

CONFIGS = [
    dict(norm="post"),
    dict(norm="pre"),
    dict(norm="none"),
    dict(norm="pre", final_norm=True),
    dict(norm="post", n_heads=4, activation="gelu"),
    dict(norm="pre", n_layers=3, activation="gelu_tanh", ln_eps=0.0),
    dict(norm="post", n_layers=1, d_ff=12, ln_eps=0.0),
    dict(norm="pre", final_norm=True, n_heads=1, activation="gelu", ln_eps=1e-3),
    dict(norm="none", n_layers=3, n_heads=4, activation="gelu_tanh"),
]


def torch_hvp(torch, model, x, y, V, loss="mse"):
    """H V by PyTorch's double backward through the reference module (math attention kernel:
    the fused SDPA kernels have no double backward)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sensiformer.interop import to_torch

    module = to_torch(model)
    names = [t["name"] for t in model.tensor_info]
    params = dict(module.named_parameters())
    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(np.asarray(y, dtype=np.float64))
    with sdpa_kernel(SDPBackend.MATH):
        out = module(xt)
        if loss == "mse":
            value = ((out - yt) ** 2).mean()
        else:
            value = torch.nn.functional.binary_cross_entropy_with_logits(out, yt)
        grads = torch.autograd.grad(value, [params[n] for n in names], create_graph=True)
        result = []
        for v in np.atleast_2d(V):
            dot = sum((g * torch.from_numpy(v[t["offset"]:t["offset"] + t["size"]].reshape(t["shape"]))).sum()
                      for g, t in zip(grads, model.tensor_info))
            hv = torch.autograd.grad(dot, [params[n] for n in names], retain_graph=True, allow_unused=True)
            result.append(np.concatenate([np.zeros(t["size"]) if h is None else h.detach().numpy().reshape(-1)
                                          for h, t in zip(hv, model.tensor_info)]))
    return np.array(result)


def worst_block_error(model, ours, ref):
    """max over parameter tensors of ||ours - ref|| / ||ref||"""
    worst = 0.0
    for t in model.tensor_info:
        sl = slice(t["offset"], t["offset"] + t["size"])
        a, b = ours[..., sl], ref[..., sl]
        scale = np.linalg.norm(b)
        err = np.linalg.norm(a - b) / (scale if scale > 0 else 1.0)
        worst = max(worst, err)
    return worst


def data(n, rows, seed=0, labels="01"):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(rows, n)).astype(np.uint8)
    y = rng.integers(0, 2, size=rows).astype(np.float64) if labels == "01" else rng.normal(size=rows)
    return x, y


@pytest.mark.torch
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_hvp_matches_torch_random_parameters(torch, random_model, config, loss):
    model = random_model(n_positions=7, d_model=8, seed=3, **config)
    x, y = data(6, 5, seed=1)  # shorter than n_positions: unused positional rows get zero curvature
    if loss == "bce":
        # keep logits O(1): at |z| ~ 20 torch's sigmoid(z)(1 - sigmoid(z)) keeps only ~1e-7 relative
        # accuracy (the engine uses exp(-|z|) / (1 + exp(-|z|))^2), which would dominate the readout bias
        head = model.parameters()
        scale = 2.0 / np.abs(model(x)).max()
        head["linear_head.weight"][:] *= scale
        head["linear_head.bias"][:] *= scale
    V = np.random.default_rng(2).normal(size=(2, model.num_parameters))
    ours = sf.probes.hvp(model, x, y, V, loss=loss)
    ref = torch_hvp(torch, model, x, y, V, loss)
    assert worst_block_error(model, ours, ref) <= 1e-10


@pytest.fixture(scope="module")
def parity_minimum():
    """A PARITY(8) fit with high LayerNorm blowup, probed in float64."""
    model = sf.Transformer(8, d_model=32, seed=0)
    trainer = sf.Trainer(model, sf.targets.Parity(8), optimizer=sf.AdamW(lr=3e-3, weight_decay=0.1), batch_size=128)
    trainer.fit(1500)
    model = model.astype("float64")
    x = sf.targets.all_inputs(8)
    y = sf.targets.Parity(8)(x)
    return model, x, y


@pytest.mark.torch
def test_hvp_matches_torch_at_trained_parity_minimum(torch, parity_minimum):
    model, x, y = parity_minimum
    assert model.loss(x, y) < 1e-2 and sf.probes.ln_blowup(model, x)["maxs_prod"] > 3
    rng = np.random.default_rng(0)
    V = rng.normal(size=(2, model.num_parameters))
    top = sf.probes.hessian_eigenvalues(model, x, y, k=1, max_iter=30, tol=1e-3).vectors  # a stiff direction
    V = np.concatenate([V, top])
    ours = sf.probes.hvp(model, x, y, V)
    ref = torch_hvp(torch, model, x, y, V)
    assert worst_block_error(model, ours, ref) <= 1e-10


def test_hvp_central_difference_oracle(random_model):
    model = random_model(n_positions=6, d_model=8, norm="pre", final_norm=True, activation="gelu", seed=5)
    x, y = data(6, 9, seed=2, labels="real")
    v = np.random.default_rng(0).normal(size=model.num_parameters)
    v /= np.linalg.norm(v)
    hv = sf.probes.hvp(model, x, y, v)
    theta = model.flat.copy()
    eps = 1e-5
    grads = []
    for sign in (1, -1):
        model.flat[:] = theta + sign * eps * v
        model.loss_and_grad(x, y)
        grads.append(model.flat_grad.copy())
    model.flat[:] = theta
    fd = (grads[0] - grads[1]) / (2 * eps)
    assert np.linalg.norm(fd - hv) <= 1e-6 * np.linalg.norm(hv)


def test_hvp_leaves_parameters_and_gradients_alone(random_model):
    model = random_model(n_positions=5, d_model=8)
    x, y = data(5, 4)
    model.loss_and_grad(x, y)
    theta, grad = model.flat.copy(), model.flat_grad.copy()
    sf.probes.hvp(model, x, y, np.ones(model.num_parameters))
    assert np.array_equal(model.flat, theta) and np.array_equal(model.flat_grad, grad)


def test_block_restriction_is_the_sub_hessian(random_model):
    model = random_model(n_positions=6, d_model=8, n_heads=2, norm="pre", seed=4)
    x, y = data(6, 7)
    v = np.random.default_rng(1).normal(size=model.num_parameters)
    for block in ["encoders.layers.0.self_attn.*", "encoders.layers.1.self_attn.k[head=1]", "layernorm",
                  "embeddings", ["encoders.layers.0.self_attn.o[head=0]", "linear_head.*"]]:
        idx = block_indices(model, block=block)
        masked = np.zeros_like(v)
        masked[idx] = v[idx]
        expected = np.zeros_like(v)
        expected[idx] = sf.probes.hvp(model, x, y, masked)[idx]
        full_layout = sf.probes.hvp(model, x, y, v, block=block)
        compact = sf.probes.hvp(model, x, y, v[idx], block=block)
        assert np.allclose(full_layout, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
        assert np.array_equal(compact, full_layout[idx])


def test_named_head_blocks_select_packed_rows(random_model):
    model = random_model(n_positions=4, d_model=8, n_heads=2)
    info = {t["name"]: t for t in model.tensor_info}
    w, b = info["encoders.layers.1.self_attn.in_proj_weight"], info["encoders.layers.1.self_attn.in_proj_bias"]
    d, dh = 8, 4
    for part, row0 in (("q", 0), ("k", d), ("v", 2 * d)):
        idx = block_indices(model, block=f"encoders.layers.1.self_attn.{part}[head=1]")
        rows = np.arange(row0 + dh, row0 + 2 * dh)
        expected = np.concatenate([w["offset"] + (rows[:, None] * d + np.arange(d)).reshape(-1), b["offset"] + rows])
        assert np.array_equal(idx, np.sort(expected))
    assert block_indices(model, block="embeddings").size == info["embedding.weight"]["size"]  # positional excluded
    with pytest.raises(ValueError, match="heads"):
        block_indices(model, block="encoders.layers.0.self_attn.q[head=2]")
    with pytest.raises(ValueError, match="matches no parameter"):
        block_indices(model, block="no.such.*")


def test_float32_hvp_close_to_float64(random_model):
    model = random_model(n_positions=8, d_model=16, n_heads=2, seed=2, scale=0.3)
    x, y = data(8, 32)
    v = np.random.default_rng(0).normal(size=model.num_parameters)
    h64 = sf.probes.hvp(model, x, y, v)
    h32 = sf.probes.hvp(model.astype("float32"), x, y, v.astype(np.float32))
    assert h32.dtype == np.float32
    assert np.linalg.norm(h32 - h64) <= 1e-4 * np.linalg.norm(h64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hvp_bitwise_identical_across_thread_counts(random_model, dtype):
    model = random_model(n_positions=12, d_model=32, n_heads=2, norm="post", seed=1, scale=0.2).astype(dtype)
    x, y = data(12, 128)
    V = np.random.default_rng(0).normal(size=(1, model.num_parameters)).astype(dtype)
    one = sf.probes.hvp(model, x, y, V, n_threads=1)
    two = sf.probes.hvp(model, x, y, V, n_threads=2)
    if sf.show_config(print_out=False)["openmp"]:
        assert model.last_threads == 2  # the parallel paths really ran
    assert np.array_equal(one, two)


def test_batches_average_their_hessians(random_model):
    model = random_model(n_positions=5, d_model=8)
    x, y = data(5, 12)
    v = np.random.default_rng(0).normal(size=model.num_parameters)
    split = sf.probes.hvp(model, x, y, v, batch_size=4)
    each = np.mean([sf.probes.hvp(model, x[i:i + 4], y[i:i + 4], v) for i in (0, 4, 8)], axis=0)
    whole = sf.probes.hvp(model, x, y, v)  # equal batches: the mean of the Hessians is the whole one
    assert np.allclose(split, each, rtol=1e-12, atol=1e-14)
    assert np.allclose(split, whole, rtol=1e-10, atol=1e-13)


def test_hvp_rejects_bad_directions(random_model):
    model = random_model(n_positions=4, d_model=4)
    x, y = data(4, 3)
    with pytest.raises(ValueError, match="v must have shape"):
        sf.probes.hvp(model, x, y, np.ones(model.num_parameters + 1))
    with pytest.raises(ValueError, match="finite"):
        sf.probes.hvp(model, x, y, np.full(model.num_parameters, np.nan))
    with pytest.raises(ValueError, match="loss"):
        sf.probes.hvp(model, x, y, np.ones(model.num_parameters), loss="l1")
