"""Worst-case sharpness and landscape slices: bounds against Gaussian sharpness and the
second-order Taylor expansion, slices against model.loss at the same points, parameters
restored by copy; the attention-logit scale against PyTorch."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer.blocks import block_indices


def randomized(activation="gelu", seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    model = sf.Transformer(kwargs.pop("n_positions", 4), d_model=kwargs.pop("d_model", 4), dtype="float64",
                           activation=activation, **kwargs)
    model.flat[:] = rng.normal(scale=0.5, size=model.num_parameters)
    for name, p in model.parameters().items():
        if "norm" in name and name.endswith("weight"):
            p[:] = 1.0 + rng.uniform(-0.5, 0.5, size=p.shape)
    return model


@pytest.fixture(scope="module")
def problem():
    x = sf.targets.all_inputs(4)
    return x, sf.targets.Parity(4)(x)


def unchanged(model, call):
    """Run call() and check the parameters and gradient buffer are bitwise what they were."""
    theta, grad = model.flat.copy(), model.flat_grad.copy()
    out = call()
    assert np.array_equal(model.flat, theta) and np.array_equal(model.flat_grad, grad)
    return out


def test_worst_case_dominates_gaussian_sharpness(problem):
    x, y = problem
    model = randomized(activation="relu")
    for rho in (0.05, 0.5):
        worst = unchanged(model, lambda: sf.probes.worst_case_sharpness(model, x, y, rho=rho, steps=10, restarts=2))
        gauss = sf.probes.sharpness(model, x, y, rho=rho, repeats=50)
        assert worst.value >= gauss.value + 2 * gauss.stderr
        assert np.linalg.norm(worst.delta) <= rho * (1 + 1e-12)
        pos = [t for t in model.tensor_info if t["kind"] == "positional"][0]
        assert not worst.delta[pos["offset"]:pos["offset"] + pos["size"]].any()
        # the reported maximiser reproduces the reported value
        other = model.copy()
        other.flat[:] = model.flat + worst.delta
        assert other.loss(x, y) - model.loss(x, y) == pytest.approx(worst.value, rel=1e-12, abs=1e-15)
        assert worst.per_restart.shape == (2,) and worst.value == worst.per_restart.max()


def test_worst_case_obeys_the_second_order_bound_at_small_radius(problem):
    """rho |g| + rho^2/2 g^T H g / |g|^2 - O(rho^3) <= worst <= rho |g| + rho^2/2 lambda_max + O(rho^3)."""
    x, y = problem
    model = randomized(activation="gelu", seed=1)
    lam = sf.probes.hessian_eigenvalues(model, x, y, k=1, tol=1e-10).values[0]
    idx = block_indices(model)
    model.loss_and_grad(x, y)
    g = np.zeros(model.num_parameters)
    g[idx] = model.flat_grad[idx]
    gn = np.linalg.norm(g)
    ghat = g / gn
    curvature_along_g = ghat @ sf.probes.hvp(model, x, y, ghat)
    for rho in (1e-3, 3e-4):
        worst = sf.probes.worst_case_sharpness(model, x, y, rho=rho, steps=20, restarts=2)
        assert worst.grad_norm == pytest.approx(gn, rel=1e-12)
        second_order = (worst.value - rho * gn) / (0.5 * rho**2)  # between g^T H g/|g|^2 and lambda_max
        assert curvature_along_g - 100 * rho <= second_order <= lam + 100 * rho


def test_adaptive_worst_case_respects_the_scaled_ball(problem):
    x, y = problem
    model = randomized(activation="relu", seed=2)
    rho, eta = 0.1, 0.01
    worst = unchanged(model, lambda: sf.probes.worst_case_sharpness(model, x, y, rho=rho, norm="adaptive", eta=eta,
                                                                     steps=8, restarts=2, seed=3))
    idx = block_indices(model)
    scaled = worst.delta[idx] / (np.abs(model.flat[idx]) + eta)
    assert np.linalg.norm(scaled) <= rho * (1 + 1e-12)
    assert worst.value > 0 and worst.history.shape == (2, 9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_slices_equal_model_loss_at_the_same_points(problem, dtype):
    x, y = problem
    model = randomized(activation="relu", seed=4).astype(dtype)
    one = unchanged(model, lambda: sf.probes.landscape_1d(model, x, y, alphas=np.linspace(-1, 1, 5), seed=7))
    two = unchanged(model, lambda: sf.probes.landscape_2d(model, x, y, alphas=[-0.5, 0, 0.25], betas=[0.1, 0.0],
                                                          seed=8))
    theta = model.flat.astype(np.float64)
    probe = model.copy()
    assert one.base_loss == model.loss(x, y)
    for a, value in zip(one.alphas, one.losses):
        probe.flat[:] = theta + a * one.directions[0]
        assert value == probe.loss(x, y)
    d1, d2 = two.directions
    for i, a in enumerate(two.alphas):
        for j, b in enumerate(two.betas):
            probe.flat[:] = theta + (a * d1 + b * d2)
            assert two.losses[i, j] == probe.loss(x, y)
    assert two.losses[1, 1] == model.loss(x, y)


def test_random_directions_are_filter_normalised():
    model = randomized(seed=5)
    d = sf.probes.random_direction(model, seed=1)
    for t in model.tensor_info:
        seg = d[t["offset"]:t["offset"] + t["size"]]
        w = model.flat[t["offset"]:t["offset"] + t["size"]]
        if t["kind"] == "positional" or len(t["shape"]) == 1:
            assert not seg.any()  # excluded, and biases / LayerNorm ignored ("biasbn")
        else:
            rows_d, rows_w = seg.reshape(t["shape"]), w.reshape(t["shape"])
            assert np.allclose(np.linalg.norm(rows_d, axis=1), np.linalg.norm(rows_w, axis=1), rtol=1e-9)
    kept = sf.probes.random_direction(model, seed=1, ignore=None, normalization="layer")
    gain = [t for t in model.tensor_info if t["name"] == "encoders.layers.0.norm1.weight"][0]
    sl = slice(gain["offset"], gain["offset"] + gain["size"])
    assert np.array_equal(kept[sl], model.flat[sl])  # the reference code's choice for 1-D tensors


def test_interpolation_and_eigen_directions(problem):
    x, y = problem
    start, end = randomized(seed=6), randomized(seed=7)
    path = unchanged(start, lambda: sf.probes.landscape_1d(start, x, y, target=end, alphas=[0.0, 0.5, 1.0]))
    assert path.losses[0] == start.loss(x, y)
    assert path.losses[2] == pytest.approx(end.loss(x, y), rel=1e-12)
    model = randomized(activation="gelu", seed=1)
    lam = sf.probes.hessian_eigenvalues(model, x, y, k=1, tol=1e-10).values[0]
    h = 1e-3
    along = sf.probes.landscape_1d(model, x, y, direction="eigen", alphas=[-h, 0.0, h])
    assert np.linalg.norm(along.directions[0]) == pytest.approx(1.0)
    curvature = (along.losses[0] + along.losses[2] - 2 * along.losses[1]) / h**2
    assert curvature == pytest.approx(lam, rel=1e-4)
    plane = sf.probes.landscape_2d(model, x, y, directions="eigen", alphas=[0.0], betas=[0.0])
    assert abs(plane.directions[0] @ plane.directions[1]) < 1e-8


@pytest.mark.torch
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_attention_logit_scale_matches_torch(torch, norm):
    from sensiformer.interop import to_torch

    model = randomized(n_positions=6, d_model=8, n_heads=2, n_layers=3, norm=norm, seed=9)
    x = np.random.default_rng(0).integers(0, 2, size=(7, 6)).astype(np.uint8)
    got = sf.probes.attention_logit_scale(model, x)
    module = to_torch(model)
    inputs = []
    for layer in module.encoders.layers:
        layer.self_attn.register_forward_pre_hook(lambda mod, args, kwargs: inputs.append(args[0].detach()),
                                                  with_kwargs=True)
    module(torch.from_numpy(x.astype(np.int64)))
    d, H, L = 8, 2, 3
    for layer, (attn_in, lyr) in enumerate(zip(inputs, module.encoders.layers)):
        w, b = lyr.self_attn.in_proj_weight.detach(), lyr.self_attn.in_proj_bias.detach()
        q = (attn_in @ w[:d].T + b[:d]).view(7, 6, H, d // H).transpose(1, 2)
        k = (attn_in @ w[d:2 * d].T + b[d:2 * d]).view(7, 6, H, d // H).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2)).abs() / np.sqrt(d // H)
        if layer == L - 1:
            logits = logits[:, :, -1:, :]  # only the readout query reaches the output
        assert np.allclose(got["max"][layer], logits.amax(dim=(0, 2, 3)).numpy(), rtol=1e-12)
        assert np.allclose(got["mean"][layer], logits.mean(dim=(0, 2, 3)).numpy(), rtol=1e-12)
