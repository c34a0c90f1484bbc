"""Hessian probes of the seq2seq model: exact Hessian-vector products of the teacher-forced loss
against PyTorch's double backward through nn.Transformer (float64, every parameter random, per
tensor ||ours - torch|| / ||torch|| <= 1e-10), batch averaging, determinism, and the probes built
on them (dense Hessian, eigenvalues, trace, the Measure callback)."""

from __future__ import annotations

import numpy as np
import pytest

import sensiformer as sf
from sensiformer.tests._support import randomize
from sensiformer.hessian import _rademacher


def random_model(seed=0, scale=0.5, **kwargs):
    cfg = dict(n_positions=6, d_model=8, n_heads=2, n_layers=2, dtype="float64")
    cfg.update(kwargs)
    return randomize(sf.Seq2SeqTransformer(**cfg), seed, scale)


def data(rows, n=6, seed=1):
    x = np.random.default_rng(seed).integers(0, 2, size=(rows, n), dtype=np.uint8)
    return x, (np.cumsum(x, axis=1) % 2).astype(np.float64)


def torch_hvp(torch, model, x, dec, y, V, loss):
    """H V by double backward through the official module (math attention: the fused kernels have
    no double backward)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sensiformer.interop import to_torch

    module = to_torch(model)
    info = model.tensor_info
    params = [dict(module.named_parameters())[t["name"]] for t in info]
    with sdpa_kernel(SDPBackend.MATH):
        out = module(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(dec.astype(np.int64)))[:, :y.shape[1]]
        yt = torch.from_numpy(y)
        value = (((out - yt) ** 2).mean() if loss == "mse"
                 else torch.nn.functional.binary_cross_entropy_with_logits(out, yt))
        grads = torch.autograd.grad(value, params, create_graph=True)
        rows = []
        for v in V:
            dot = sum((g * torch.from_numpy(v[t["offset"]:t["offset"] + t["size"]].reshape(t["shape"]))).sum()
                      for g, t in zip(grads, info))
            hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
            rows.append(np.concatenate([np.zeros(t["size"]) if h is None else h.detach().numpy().ravel()
                                        for h, t in zip(hv, info)]))
    return np.array(rows)


def worst_tensor_error(model, ours, ref):
    worst = 0.0
    for t in model.tensor_info:
        sl = slice(t["offset"], t["offset"] + t["size"])
        scale = np.linalg.norm(ref[:, sl])
        worst = max(worst, np.linalg.norm(ours[:, sl] - ref[:, sl]) / (scale if scale > 0 else 1.0))
    return worst


CONFIGS = [
    dict(norm="post"),
    dict(norm="pre"),
    dict(norm="post", activation="gelu", n_decoder_layers=3, d_ff=10),
    dict(norm="pre", activation="gelu_tanh", n_layers=1, n_heads=4, ln_eps=1e-3),
    dict(norm="post", d_model=32, n_heads=2),  # wide heads: the encoder stack's table-capable layer 0
]


@pytest.mark.torch
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_hvp_matches_torch_double_backward(torch, config, loss):
    model = random_model(seed=3, **config)
    x, y = data(5)
    dec = model.teacher_forcing(y)
    if loss == "bce":  # keep logits O(1), as test_hvp.py explains
        scale = 2.0 / np.abs(model.forward(x, dec)).max()
        model.parameters()["linear_head.weight"][:] *= scale
        model.parameters()["linear_head.bias"][:] *= scale
    V = np.random.default_rng(2).normal(size=(2, model.num_parameters))
    ours = sf.probes.hvp(model, x, y, V, loss=loss)
    assert worst_tensor_error(model, ours, torch_hvp(torch, model, x, dec, y, V, loss)) <= 1e-10


@pytest.mark.torch
def test_hvp_with_free_decoder_inputs_and_fewer_labels(torch):
    """Any decoder tokens (SOS included) and L < S labels, through the HessianOperator."""
    from sensiformer.hessian import HessianOperator

    model = random_model(seed=4)
    x, _ = data(4)
    rng = np.random.default_rng(5)
    dec = rng.integers(0, 3, size=(4, 7), dtype=np.uint8)
    y = rng.normal(size=(4, 5))
    V = rng.normal(size=(2, model.num_parameters))
    ours = HessianOperator(model, x, y, decoder_input=dec, full=True).full_products(V)
    assert worst_tensor_error(model, ours, torch_hvp(torch, model, x, dec, y, V, "mse")) <= 1e-10


def test_batches_determinism_and_buffers():
    model = random_model(seed=6, dtype="float32", d_model=16)
    x, y = data(64, seed=2)
    V = np.random.default_rng(0).normal(size=(2, model.num_parameters)).astype(np.float32)
    grads_before = model.flat_grad.copy()
    params_before = model.flat.copy()
    one = sf.probes.hvp(model, x, y, V, n_threads=1)
    two = sf.probes.hvp(model, x, y, V, n_threads=2)
    np.testing.assert_array_equal(one, two)  # the same bits for any thread count
    np.testing.assert_array_equal(model.flat_grad, grads_before)
    np.testing.assert_array_equal(model.flat, params_before)
    halves = sf.probes.hvp(model.astype("float64"), x, y, V.astype(np.float64), batch_size=32)
    whole = sf.probes.hvp(model.astype("float64"), x, y, V.astype(np.float64))
    np.testing.assert_allclose(halves, whole, rtol=1e-10, atol=1e-12 * np.abs(whole).max())


def test_hessian_probes_and_measure_run_on_seq2seq():
    model = random_model(seed=7)
    x, y = data(6)
    H = sf.probes.hessian_matrix(model, x, y, block="model.decoder.layers.0.norm3.*")
    assert H.shape == (16, 16) and np.allclose(H, H.T, atol=1e-12)
    top = sf.probes.hessian_eigenvalues(model, x, y, k=1, max_iter=40)
    assert top.values[0] > 0
    trace = sf.probes.hessian_trace(model, x, y, samples=8)
    assert np.isfinite(trace.value)
    trainer = sf.Trainer(sf.Seq2SeqTransformer(6, d_model=8), sf.targets.PrefixParity(6), batch_size=8)
    history = trainer.fit(4, log_every=2, progress=False,
                          callbacks=[sf.Measure(every=2, repeats=2, hessian=True, hessian_samples=2, hessian_iters=5)])
    assert np.isfinite(history["hessian_top"]).all() and np.isfinite(history["hessian_trace"]).all()


def test_landscape_probes_and_cross_attention_head_blocks():
    model = random_model(seed=8)
    x, y = data(8)
    base = model.loss(x, y)
    worst = sf.probes.worst_case_sharpness(model, x, y, rho=0.05, steps=3, restarts=1)
    assert worst.value >= 0
    line = sf.probes.landscape_1d(model, x, y, direction="eigen")
    assert line.losses.min() <= base + 1e-12
    assert sf.probes.landscape_2d(model, x, y).losses.shape[0] == sf.probes.landscape_2d(model, x, y).losses.shape[1]
    assert model.loss(x, y) == base  # every probe restores the parameters
    from sensiformer.blocks import block_indices

    q1 = block_indices(model, block="model.decoder.layers.0.multihead_attn.q[head=1]")
    names = {model.tensor_info[i]["name"] for i in range(len(model.tensor_info))
             if model.tensor_info[i]["offset"] <= q1[0] < model.tensor_info[i]["offset"] + model.tensor_info[i]["size"]}
    assert names == {"model.decoder.layers.0.multihead_attn.in_proj_weight"} and q1.size == 4 * 8 + 4


def test_hessian_probes_take_decoder_input_for_pm1_labels():
    """With ±1 labels the teacher forcing cannot be the labels themselves: every Hessian probe
    takes the decoder input, and its Hessian is the teacher-forced loss's (central differences of
    the engine's gradient)."""
    from sensiformer.blocks import block_indices

    model = random_model(seed=9)
    x, bits = data(6)
    y, dec = 2 * bits - 1, model.teacher_forcing(bits)
    block = "model.decoder.layers.0.norm3.*"
    with pytest.raises(ValueError, match="0/1"):
        sf.probes.hessian_matrix(model, x, y, block=block)
    H = sf.probes.hessian_matrix(model, x, y, block=block, decoder_input=dec)
    idx = block_indices(model, block=block)
    h, fd = 1e-5, np.empty((idx.size, idx.size))
    for j, i in enumerate(idx):
        grads = []
        for sign in (1, -1):
            model.flat[i] += sign * h
            model.loss_and_grad(x, y, decoder_input=dec)
            grads.append(model.flat_grad[idx].copy())
            model.flat[i] -= sign * h
        fd[:, j] = (grads[0] - grads[1]) / (2 * h)
    np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-8 * np.abs(H).max())
    V = np.random.default_rng(3).normal(size=(2, model.num_parameters))
    V_block = np.zeros_like(V)
    V_block[:, idx] = V[:, idx]
    np.testing.assert_allclose(sf.probes.hvp(model, x, y, V_block, decoder_input=dec)[:, idx], V[:, idx] @ H.T,
                               rtol=1e-9, atol=1e-12 * np.abs(H).max())
    top = sf.probes.hessian_eigenvalues(model, x, y, k=1, block=block, decoder_input=dec, max_iter=idx.size)
    assert top.values[0] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-8)
    trace = sf.probes.hessian_trace(model, x, y, samples=5, seed=4, block=block, decoder_input=dec)
    Z = _rademacher(4, 0, 5, idx.size)  # hessian_trace's probe stream for seed 4
    np.testing.assert_allclose(trace.samples, np.einsum("sn,nm,sm->s", Z, H, Z), rtol=1e-9)
    density = sf.probes.hessian_density(model, x, y, probes=2, steps=idx.size, block=block, decoder_input=dec)
    assert density.nodes[density.weights > 0].max() == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-6)


def test_measure_hessian_on_a_pm1_seq2seq_trainer():
    trainer = sf.Trainer(sf.Seq2SeqTransformer(6, d_model=8, dtype="float64"), sf.targets.PrefixParity(6),
                         batch_size=8, labels="pm1")
    probe = sf.Measure(every=2, repeats=2, hessian=True, hessian_samples=3, hessian_iters=5)
    history = trainer.fit(4, log_every=2, progress=False, callbacks=[probe])
    x, y = probe.x, probe.y
    assert set(np.unique(y)) <= {-1.0, 1.0}
    dec = trainer.model.teacher_forcing((y > 0).astype(np.uint8))
    trace = sf.probes.hessian_trace(trainer.model, x, y, samples=3, decoder_input=dec)
    assert history["hessian_trace"].iloc[-1] == trace.value


def test_landscape_probes_take_decoder_input_for_pm1_labels():
    model = random_model(seed=10)
    x, bits = data(6)
    y, dec = 2 * bits - 1, model.teacher_forcing(bits)
    with pytest.raises(ValueError, match="0/1"):
        sf.probes.landscape_1d(model, x, y)
    direction = np.random.default_rng(1).normal(size=model.num_parameters)
    line = sf.probes.landscape_1d(model, x, y, direction=direction, alphas=[-0.1, 0.2], decoder_input=dec)
    base, theta = model.loss(x, y, decoder_input=dec), model.flat.copy()
    assert line.base_loss == base
    for a, value in zip(line.alphas, line.losses):
        model.flat[:] = theta + a * direction
        assert value == model.loss(x, y, decoder_input=dec)
    model.flat[:] = theta
    plane = sf.probes.landscape_2d(model, x, y, directions="eigen", alphas=[0.0], betas=[0.0], decoder_input=dec)
    assert plane.losses[0, 0] == base
    worst = sf.probes.worst_case_sharpness(model, x, y, rho=0.05, steps=3, restarts=1, decoder_input=dec)
    assert worst.value > 0 and model.loss(x, y, decoder_input=dec) == base
