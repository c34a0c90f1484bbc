"""Sharpness and LayerNorm blowup against the official PyTorch computations (float64)."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import interop, probes


def official_blowup(torch, module, x, n_layers, theory=False, eps=1e-5):
    """The official hook-based measure: 1/std of every norm1/norm2 input (torch.std: unbiased,
    no eps), last layer at the readout position only, per-sample max/mean, product/sum over LNs."""
    store = {}
    hooks = []
    for i, layer in enumerate(module.encoders.layers):
        for j, ln in ((1, layer.norm1), (2, layer.norm2)):
            hooks.append(ln.register_forward_hook(
                lambda mod, inp, out, key=(i, j): store.__setitem__(key, inp[0].detach())))
    module(torch.from_numpy(x.astype(np.int64)))
    for h in hooks:
        h.remove()
    maxs, means = [], []
    for i in range(n_layers):
        for j in (1, 2):
            z = store[(i, j)]
            inv = 1 / torch.sqrt(z.var(dim=-1, unbiased=False) + eps) if theory else 1 / z.std(dim=-1)
            if i == n_layers - 1:
                inv = inv[:, -1:]
            maxs.append(inv.max(dim=1).values)
            means.append(inv.mean(dim=1))
    maxs, means = torch.stack(maxs), torch.stack(means)
    return dict(maxs_prod=maxs.prod(0).mean().item(), means_prod=means.prod(0).mean().item(),
                maxs_sum=maxs.sum(0).mean().item(), means_sum=means.sum(0).mean().item())


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("definition", ["official", "theory"])
def test_ln_blowup_equals_the_official_hooks(torch, random_model, norm, definition):
    model = random_model(seed=3, n_positions=7, d_model=8, n_heads=2, n_layers=3, d_ff=12, norm=norm,
                         identical_layers=False)
    x = np.random.default_rng(0).integers(0, 2, size=(6, 7))
    ref = official_blowup(torch, interop.to_torch(model), x, 3, theory=definition == "theory")
    ours = probes.ln_blowup(model, x, definition=definition)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-12), key


def test_sharpness_with_explicit_noise_equals_functional_call(torch, random_model):
    model = random_model(seed=4, n_positions=7, d_model=8, n_heads=2, n_layers=2, d_ff=12)
    module = interop.to_torch(model)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, size=(6, 7))
    y = rng.integers(0, 2, size=6).astype(float)
    repeats, sigma = 4, 0.05
    noise = rng.normal(size=(repeats, model.num_parameters))
    est = probes.sharpness(model, x, y, sigma=sigma, repeats=repeats, noise=noise)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    base = torch.nn.functional.mse_loss(module(xt), yt).item()
    named = dict(module.named_parameters())
    expected = []
    for r in range(repeats):
        params = {}
        for t in model.tensor_info:
            z = torch.from_numpy(noise[r, t["offset"]:t["offset"] + t["size"]].reshape(t["shape"]))
            params[t["name"]] = named[t["name"]] if t["kind"] == "positional" else named[t["name"]] + sigma * z
        out = torch.func.functional_call(module, params, (xt,))
        expected.append(torch.nn.functional.mse_loss(out, yt).item() - base)
    np.testing.assert_allclose(est.samples, expected, rtol=1e-10, atol=1e-14)
    assert est.value == pytest.approx(np.mean(expected), rel=1e-10)
    assert probes.sharpness(model, x, y, sigma=sigma, repeats=repeats, noise=noise, as_pm1=True).value == \
        pytest.approx(4 * est.value, rel=1e-12)


def test_sharpness_leaves_parameters_bit_identical_and_is_reproducible(random_model):
    model = random_model(seed=5, n_positions=8, d_model=16, n_layers=2)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 2, size=(12, 8)), rng.normal(size=12)
    before = model.flat.copy()
    a = probes.sharpness(model, x, y, repeats=5, seed=7, batch_size=4)
    assert np.array_equal(model.flat, before)
    b = probes.sharpness(model, x, y, repeats=5, seed=7, batch_size=4)
    assert np.array_equal(a.samples, b.samples)
    shared = probes.sharpness(model, x, y, repeats=5, seed=7, batch_size=4, paper_compatible=True)
    assert not np.array_equal(a.samples, shared.samples)  # independent draws per batch by default


def test_rho_sets_sigma_from_the_perturbed_parameter_count(random_model):
    model = random_model(seed=6, n_positions=6, d_model=8, n_layers=1)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 2, size=(5, 6)), rng.normal(size=5)
    p = sum(t["size"] for t in model.tensor_info if t["kind"] != "positional")
    by_rho = probes.sharpness(model, x, y, rho=0.3, repeats=3, seed=1)
    by_sigma = probes.sharpness(model, x, y, sigma=0.3 / np.sqrt(p), repeats=3, seed=1)
    assert np.array_equal(by_rho.samples, by_sigma.samples)
    with pytest.raises(ValueError, match="sigma or rho"):
        probes.sharpness(model, x, y, sigma=0.1, rho=0.1)


def test_param_norm_excludes_positional_embeddings(random_model):
    model = random_model(seed=7, n_positions=6, d_model=8, n_layers=2)
    flat = np.concatenate([p.ravel() for name, p in model.parameters().items() if "positional" not in name])
    assert probes.param_norm(model) == pytest.approx(np.linalg.norm(flat), rel=1e-13)
    assert sf.probes.param_norm(sf.Transformer(20, d_model=128, dtype="float64")) == pytest.approx(35.8, abs=0.6)


@pytest.mark.parametrize("kind", ["encoder", "seq2seq"])
def test_sharpness_noise_is_the_same_at_every_n_positions(random_model, kind):
    """The same function embedded in models with 8 and 12 positions (the positional table, excluded from the
    noise, differs only in rows the inputs never reach) gets the same noise on every other tensor: identical
    per-draw sharpness values, as the official code's per-tensor draws give every run of a sweep."""
    rng = np.random.default_rng(4)
    if kind == "encoder":
        small = random_model(seed=8, n_positions=8, d_model=16, n_layers=2)
        large = sf.Transformer(n_positions=12, d_model=16, n_layers=2, dtype="float64")
        x = rng.integers(0, 2, size=(24, 8)).astype(np.uint8)
        y, extra = rng.normal(size=24), {}
    else:
        small = sf.Seq2SeqTransformer(n_positions=8, d_model=16, n_layers=1, seed=8, dtype="float64")
        large = sf.Seq2SeqTransformer(n_positions=12, d_model=16, n_layers=1, seed=9, dtype="float64")
        x = rng.integers(0, 2, size=(24, 8)).astype(np.uint8)
        y, extra = sf.targets.PrefixParity(8)(x).astype(np.float64), {}
    for name, value in small.parameters().items():
        target = large.parameters()[name]
        if value.shape == target.shape:
            target[...] = value
        else:  # the positional table: the first rows are the ones length-8 inputs use
            target[:value.shape[0]] = value
    if kind == "encoder":
        assert np.array_equal(small.forward(x), large.forward(x))
    a = probes.sharpness(small, x, y, sigma=0.05, repeats=5, seed=3, **extra)
    b = probes.sharpness(large, x, y, sigma=0.05, repeats=5, seed=3, **extra)
    assert np.array_equal(a.samples, b.samples)
    assert np.std(a.samples) > 0
