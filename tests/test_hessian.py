"""Hessian probes: eigenvalues, trace and spectral density against the full Hessian that
PyTorch computes for a tiny model (d=4, n=4); Hutchinson and sharpness error bars; curvature
consistency with finite loss differences; block restriction."""

import os

import numpy as np
import pytest

import sensiformer as sf
from sensiformer.blocks import block_indices


def _torch():
    if os.environ.get("SENSIFORMER_REQUIRE_TORCH") == "1":
        import torch
    else:
        torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def randomized_tiny(seed=0, activation="relu"):
    rng = np.random.default_rng(seed)
    model = sf.Transformer(4, d_model=4, dtype="float64", activation=activation)
    model.flat[:] = rng.normal(scale=0.5, size=model.num_parameters)
    for name, p in model.parameters().items():
        if "norm" in name and name.endswith("weight"):
            p[:] = 1.0 + rng.uniform(-0.5, 0.5, size=p.shape)
    return model


@pytest.fixture(scope="module")
def tiny():
    """A randomised d=4, n=4 model on all 16 inputs (PARITY labels)."""
    model = randomized_tiny()
    x = sf.targets.all_inputs(4)
    return model, x, sf.targets.Parity(4)(x)


@pytest.fixture(scope="module")
def torch_hessian(tiny):
    """PyTorch's full Hessian over the parameters the probes use (positional excluded)."""
    torch = _torch()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sensiformer.interop import to_torch

    model, x, y = tiny
    module = to_torch(model)
    idx = torch.from_numpy(block_indices(model))
    base = torch.from_numpy(model.flat.copy())
    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)

    def loss(sub):
        flat = base.index_put((idx,), sub)
        params = {t["name"]: flat[t["offset"]:t["offset"] + t["size"]].view(*t["shape"]) for t in model.tensor_info}
        return ((torch.func.functional_call(module, params, (xt,)) - yt) ** 2).mean()

    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(loss, base[idx], vectorize=True).numpy()


@pytest.mark.torch
def test_dense_hessian_and_trace_match_torch(tiny, torch_hessian):
    model, x, y = tiny
    H = sf.probes.hessian_matrix(model, x, y)
    assert H.shape == torch_hessian.shape == (281, 281)  # the paper's 281 non-positional parameters at d=4
    assert np.abs(H - torch_hessian).max() <= 1e-12 * np.abs(torch_hessian).max()
    assert np.trace(H) == pytest.approx(np.trace(torch_hessian), rel=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
def test_extreme_eigenvalues_match_torch(tiny, torch_hessian, which):
    model, x, y = tiny
    exact = np.linalg.eigvalsh(torch_hessian)
    k = 3
    want = {"largest": exact[::-1][:k], "smallest": exact[:k][::-1],
            "both": np.concatenate([exact[::-1][:k], exact[:k][::-1]])}[which]
    result = sf.probes.hessian_eigenvalues(model, x, y, k=k, which=which, tol=1e-10)
    scale = np.abs(exact).max()
    assert np.allclose(result.values, want, rtol=0, atol=1e-9 * scale)
    assert result.converged.all() and result.iterations <= 200
    assert np.all(result.residuals <= 1e-7 * scale)
    # eigenvectors: unit, laid out like model.flat, zero on the positional table
    pos = [t for t in model.tensor_info if t["kind"] == "positional"][0]
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0)
    assert not result.vectors[:, pos["offset"]:pos["offset"] + pos["size"]].any()
    if which == "largest":  # the top eigenvalue is well separated: its vector matches torch's
        w, U = np.linalg.eigh(torch_hessian)
        assert abs(result.vectors[0, block_indices(model)] @ U[:, -1]) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.torch
def test_blocks_give_the_sub_hessian(tiny, torch_hessian):
    model, x, y = tiny
    idx = block_indices(model)
    for block in ["encoders.layers.0.self_attn.q[head=1]", "layernorm", "embeddings", "encoders.layers.1.*"]:
        sub = np.searchsorted(idx, block_indices(model, block=block))
        H_sub = torch_hessian[np.ix_(sub, sub)]
        assert np.allclose(sf.probes.hessian_matrix(model, x, y, block=block), H_sub, rtol=0,
                           atol=1e-12 * np.abs(torch_hessian).max())
        top = sf.probes.hessian_eigenvalues(model, x, y, k=2, which="both", block=block, tol=1e-10)
        exact = np.linalg.eigvalsh(H_sub)
        assert top.values[0] == pytest.approx(exact[-1], abs=1e-9 * np.abs(exact).max())
        assert top.values[-1] == pytest.approx(exact[0], abs=1e-9 * np.abs(exact).max())


def test_hutchinson_trace_within_4_stderr(tiny):
    model, x, y = tiny
    exact = np.trace(sf.probes.hessian_matrix(model, x, y))
    est = sf.probes.hessian_trace(model, x, y, samples=400, seed=1)
    assert est.n_samples == 400 and est.samples.shape == (400,)
    assert abs(est.value - exact) <= 4 * est.stderr
    again = sf.probes.hessian_trace(model, x, y, samples=400, seed=1)
    assert np.array_equal(again.samples, est.samples)  # common random numbers for a seed


def test_stochastic_estimates_report_calibrated_stderr(tiny):
    """Over many repeats, the spread of the estimates matches the reported stderr (factor 1.5)."""
    model, x, y = tiny
    traces = [sf.probes.hessian_trace(model, x, y, samples=30, seed=s) for s in range(60)]
    spread = np.std([e.value for e in traces], ddof=1)
    assert 1 / 1.5 <= spread / np.mean([e.stderr for e in traces]) <= 1.5
    sharp = [sf.probes.sharpness(model, x, y, sigma=0.05, repeats=30, seed=s) for s in range(60)]
    spread = np.std([e.value for e in sharp], ddof=1)
    assert 1 / 1.5 <= spread / np.mean([e.stderr for e in sharp]) <= 1.5


def test_curvature_consistency_with_loss_differences(tiny):
    """(L(θ+σz) + L(θ−σz) − 2L(θ)) / σ² → zᵀHz as σ → 0, and its mean over z is the trace.
    GELU keeps the loss smooth: with ReLU a perturbation of norm σ|z| may cross a kink, where the
    difference quotient is not O(σ²)-close to the curvature at θ."""
    _, x, y = tiny
    model = randomized_tiny(activation="gelu")
    idx = block_indices(model)
    Z = np.random.default_rng(3).normal(size=(200, model.num_parameters))
    Z[:, np.setdiff1d(np.arange(model.num_parameters), idx)] = 0  # sharpness leaves positional alone too
    zHz = np.einsum("rp,rp->r", Z, sf.probes.hvp(model, x, y, Z))

    def symmetric_difference(sigma, draws):
        up = sf.probes.sharpness(model, x, y, sigma=sigma, repeats=len(draws), noise=draws).samples
        down = sf.probes.sharpness(model, x, y, sigma=sigma, repeats=len(draws), noise=-draws).samples
        return (up + down) / sigma**2

    errors = [np.abs(symmetric_difference(s, Z[:5]) - zHz[:5]) / np.abs(zHz).mean() for s in (1e-2, 1e-3)]
    assert np.all(errors[1] <= 1e-4)
    assert np.all(errors[1] <= errors[0] / 30)  # O(σ²) convergence
    values = symmetric_difference(1e-3, Z)
    est = sf.Estimate.from_samples(values)
    exact = np.trace(sf.probes.hessian_matrix(model, x, y))
    assert abs(est.value - exact) <= 4 * est.stderr


def test_slq_density_first_moment_is_the_trace(tiny):
    model, x, y = tiny
    H = sf.probes.hessian_matrix(model, x, y)
    density = sf.probes.hessian_density(model, x, y, probes=40, steps=20, seed=2)
    # each probe's quadrature integrates x exactly: n * sum(w * node) = z^T H z for the probe,
    # and the probes are hessian_trace's draws for the same seed
    hutchinson = sf.probes.hessian_trace(model, x, y, samples=40, seed=2)
    assert np.allclose(density.trace.samples, hutchinson.samples, rtol=1e-9, atol=1e-9 * np.abs(H).max())
    assert abs(density.trace.value - np.trace(H)) <= 4 * density.trace.stderr
    assert density.moment(0).value == pytest.approx(1.0)
    assert np.trapezoid(density.density, density.grid) == pytest.approx(1.0, abs=1e-6)
    # a full-length run puts its nodes on the true eigenvalues
    full = sf.probes.hessian_density(model, x, y, probes=1, steps=281, seed=0)
    exact = np.linalg.eigvalsh(H)
    used = full.nodes[full.weights > 1e-12]
    assert used.size > 100
    assert np.abs(used[:, None] - exact[None, :]).min(axis=1).max() <= 1e-8 * np.abs(exact).max()


def test_float32_probes_close_to_float64(tiny):
    model, x, y = tiny
    top64 = sf.probes.hessian_eigenvalues(model, x, y, k=1).values[0]
    top32 = sf.probes.hessian_eigenvalues(model.astype("float32"), x, y, k=1, tol=1e-4).values[0]
    assert top32 == pytest.approx(top64, rel=1e-4)


def test_hessian_probes_are_deterministic_across_thread_counts(tiny):
    model, x, y = tiny
    a = sf.probes.hessian_eigenvalues(model, x, y, k=2, n_threads=1)
    b = sf.probes.hessian_eigenvalues(model, x, y, k=2, n_threads=2)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.vectors, b.vectors)
    t1 = sf.probes.hessian_trace(model, x, y, samples=10, n_threads=1)
    t2 = sf.probes.hessian_trace(model, x, y, samples=10, n_threads=2)
    assert np.array_equal(t1.samples, t2.samples)


def test_hessian_probe_arguments_are_checked(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="which"):
        sf.probes.hessian_eigenvalues(model, x, y, which="middle")
    with pytest.raises(ValueError, match="selects no parameters"):
        sf.probes.hessian_trace(model, x, y, block="positional_encoding.weight")
    with pytest.raises(ValueError, match="max_size"):
        sf.probes.hessian_matrix(model, x, y, max_size=10)


def test_measure_callback_records_hessian_and_logit_scale():
    model = sf.Transformer(4, d_model=8, seed=0)
    x = sf.targets.all_inputs(4)
    y = sf.targets.Parity(4)(x)
    measure = sf.Measure(x, y, every=10, hessian=True, hessian_samples=5, hessian_iters=10, logit_scale=True)
    trainer = sf.Trainer(model, sf.targets.Parity(4), batch_size=16, n_threads=1)
    history = trainer.fit(20, callbacks=[measure], progress=False)
    rows = history.dropna(subset=["hessian_top"])
    assert len(rows) == 2
    for column in ("hessian_top", "hessian_trace", "hessian_trace_stderr", "logit_max", "logit_mean"):
        assert np.all(np.isfinite(rows[column]))
    top = sf.probes.hessian_eigenvalues(model, x, y, k=1, max_iter=10, seed=0).values[0]
    assert rows["hessian_top"].iloc[-1] == top  # measured at the last step, same start vector
