"""RMSNorm as a norm type (issue 17, item 6): ``norm_type="rms"`` gives every norm of either model
kind ``torch.nn.RMSNorm``'s function (a gain, no bias, no centring), with the existing pre/post/none
placement. Checked against PyTorch in float64 (forward, gradients, Hessian-vector products), the
blowup probe's analogue (1/RMS of the norm inputs) against hooks on the torch module, and the
plumbing a new option needs (names, files, determinism, decoding, bad input)."""

from __future__ import annotations

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import interop, probes
from sensiformer.tests._support import randomize

import test_hvp  # the PyTorch references, made importable by conftest.py
import test_seq2seq_hessian
import test_seq2seq_torch
import test_torch_equivalence

ENCODER_VARIANTS = [dict(norm="post"), dict(norm="pre"), dict(norm="pre", final_norm=True)]
# narrow heads (the narrow attention kernel) and wide heads with B > 2 (layer 0 on the distinct rows,
# scores from a table in the loss and its gradient)
WIDTHS = [dict(d_model=8, n_heads=2, d_ff=12), dict(d_model=32, n_heads=2, d_ff=24)]


@pytest.mark.parametrize("variant", ENCODER_VARIANTS, ids=lambda v: "+".join(f"{k}={v[k]}" for k in v))
@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"d{w['d_model']}")
def test_encoder_matches_torch_rmsnorm_float64(torch, random_model, variant, width):
    cfg = dict(n_positions=7, n_layers=2, norm_type="rms", activation="gelu", **variant, **width)
    test_torch_equivalence._check_f64(torch, random_model, cfg, seq_len=7, batch=6, seed=3)


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"d{w['d_model']}")
def test_seq2seq_matches_torch_rmsnorm_float64(torch, norm, width):
    model = dict(n_positions=6, n_layers=2, n_decoder_layers=2, norm=norm, norm_type="rms", activation="relu",
                 ln_eps=1e-5, **width)
    for decoder in ("teacher", "free"):
        test_seq2seq_torch.check_f64(torch, dict(model=model, seq_len=6, batch=5, decoder=decoder, seed=11))


@pytest.mark.parametrize("variant", ENCODER_VARIANTS, ids=lambda v: "+".join(f"{k}={v[k]}" for k in v))
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_encoder_hvp_matches_torch_double_backward(torch, random_model, variant, loss):
    model = random_model(n_positions=7, d_model=8, seed=3, norm_type="rms", **variant)
    x, y = test_hvp.data(6, 5, seed=1)
    if loss == "bce":  # keep logits O(1) (see test_hvp.py)
        scale = 2.0 / np.abs(model(x)).max()
        model.parameters()["linear_head.weight"][:] *= scale
        model.parameters()["linear_head.bias"][:] *= scale
    V = np.random.default_rng(2).normal(size=(2, model.num_parameters))
    ours = sf.probes.hvp(model, x, y, V, loss=loss)
    assert test_hvp.worst_block_error(model, ours, test_hvp.torch_hvp(torch, model, x, y, V, loss)) <= 1e-10


@pytest.mark.parametrize("config", [dict(norm="post"), dict(norm="pre", d_model=32, n_heads=2)],
                         ids=["post", "pre-wide"])
def test_seq2seq_hvp_matches_torch_double_backward(torch, config):
    model = test_seq2seq_hessian.random_model(seed=3, norm_type="rms", **config)
    x, y = test_seq2seq_hessian.data(5)
    dec = model.teacher_forcing(y)
    V = np.random.default_rng(2).normal(size=(2, model.num_parameters))
    ours = sf.probes.hvp(model, x, y, V)
    ref = test_seq2seq_hessian.torch_hvp(torch, model, x, dec, y, V, "mse")
    assert test_seq2seq_hessian.worst_tensor_error(model, ours, ref) <= 1e-10


def test_float32_gradients_agree_with_float64():
    m64 = randomize(sf.Transformer(8, d_model=16, n_layers=2, norm="pre", final_norm=True, norm_type="rms",
                                   dtype="float64"), 4, 0.5)
    m32 = m64.astype("float32")
    x = np.random.default_rng(0).integers(0, 2, size=(32, 8))
    y = sf.targets.Parity(8)(x)
    (_, g64), (_, g32) = m64.loss_and_grad(x, y), m32.loss_and_grad(x, y)
    for name in g64:
        scale = np.abs(g64[name]).max() or 1.0
        assert np.abs(g32[name] - g64[name]).max() <= 1e-4 * scale, name


def _rms_hook_stats(torch, norms, run, last_only, theory, eps):
    """Per norm module: per-sample max and mean over its rows of 1/RMS(input) (theory: of
    1/sqrt(mean square + eps)), from forward hooks on the torch module."""
    store, hooks = {}, []
    for i, norm in enumerate(norms):
        hooks.append(norm.register_forward_hook(lambda mod, inp, out, k=i: store.__setitem__(k, inp[0].detach())))
    run()
    for h in hooks:
        h.remove()
    rows = []
    for i in range(len(norms)):
        z = store[i]
        inv = 1 / torch.sqrt((z * z).mean(dim=-1) + (eps if theory else 0.0))
        if last_only[i]:
            inv = inv[:, -1:]
        rows.append((inv.max(dim=1).values.numpy(), inv.mean(dim=1).numpy()))
    return rows


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("definition", ["official", "theory"])
def test_blowup_reports_the_inverse_rms_of_the_norm_inputs(torch, random_model, norm, definition):
    model = random_model(seed=3, n_positions=7, d_model=8, n_heads=2, n_layers=3, d_ff=12, norm=norm,
                         norm_type="rms", identical_layers=False, ln_eps=1e-3)
    module = interop.to_torch(model)
    x = np.random.default_rng(0).integers(0, 2, size=(6, 7))
    norms = [n for layer in module.encoders.layers for n in (layer.norm1, layer.norm2)]
    last = [i >= 4 for i in range(6)]  # the last layer is read at the readout position only
    ref = _rms_hook_stats(torch, norms, lambda: module(torch.from_numpy(x.astype(np.int64))), last,
                          definition == "theory", 1e-3)
    per_sample = probes.ln_blowup(model, x, definition=definition, per_sample=True)
    maxs, means = np.asarray(per_sample["maxs"]), np.asarray(per_sample["means"])
    for i, (mx, mn) in enumerate(ref):
        np.testing.assert_allclose(maxs[i], mx, rtol=1e-12)
        np.testing.assert_allclose(means[i], mn, rtol=1e-12)


def test_names_follow_torch_rmsnorm_and_drop_the_biases():
    layer = sf.Transformer(6, d_model=16, norm="pre", final_norm=True)
    rms = sf.Transformer(6, d_model=16, norm="pre", final_norm=True, norm_type="rms")
    dropped = set(layer.state_dict()) - set(rms.state_dict())
    assert dropped == {"encoders.layers.0.norm1.bias", "encoders.layers.0.norm2.bias", "encoders.layers.1.norm1.bias",
                       "encoders.layers.1.norm2.bias", "encoders.norm.bias"}
    assert layer.num_parameters - rms.num_parameters == 5 * 16
    s2s = sf.Seq2SeqTransformer(6, d_model=8, n_layers=1, n_decoder_layers=2, norm_type="rms")
    assert not [k for k in s2s.state_dict() if "norm" in k and k.endswith("bias")]
    assert sum("norm" in k for k in s2s.state_dict()) == 2 + 1 + 2 * 3 + 1
    assert all(np.all(v == 1) for k, v in s2s.state_dict().items() if "norm" in k)  # RMSNorm's initial gain


def test_init_is_the_layernorm_models_minus_its_biases():
    """Same seed, same draws for every tensor the two norm types share (keys are per tensor index,
    so dropping the biases shifts them: compare distributions of the matrices instead)."""
    layer = sf.Transformer(8, d_model=32, seed=5)
    rms = sf.Transformer(8, d_model=32, seed=5, norm_type="rms")
    for name, value in rms.state_dict().items():
        ref = layer.state_dict()[name]
        assert value.shape == ref.shape
        if name.endswith("in_proj_weight"):
            bound = np.sqrt(6.0 / (ref.shape[0] + ref.shape[1]))
            assert np.abs(value).max() <= bound and np.abs(value).max() > 0.9 * bound


@pytest.mark.parametrize("cls", [sf.Transformer, sf.Seq2SeqTransformer])
def test_training_is_deterministic_across_thread_counts_and_files_keep_the_type(tmp_path, cls):
    target = sf.targets.Parity(8) if cls is sf.Transformer else sf.targets.PrefixParity(8)
    flats = []
    for threads in (1, 2):
        model = cls(8, d_model=32, n_layers=2, norm="pre", norm_type="rms", seed=1)
        trainer = sf.Trainer(model, target, batch_size=32, seed=2, n_threads=threads)
        trainer.fit(20, progress=False)
        flats.append(model.flat.copy())
    assert np.array_equal(flats[0], flats[1])
    assert np.all(np.isfinite(flats[0]))
    model.save(tmp_path / "m.npz")
    loaded = sf.load(tmp_path / "m.npz")
    assert loaded.config["norm_type"] == "rms" and np.array_equal(loaded.flat, model.flat)
    assert "norm_type='rms'" in repr(loaded)


def test_cached_decoding_equals_the_full_model():
    model = randomize(sf.Seq2SeqTransformer(7, d_model=16, norm="pre", norm_type="rms", dtype="float64"), 3, 0.5)
    x = np.random.default_rng(1).integers(0, 2, size=(9, 7))
    cached, full = model.generate(x, cache=True), model.generate(x, cache=False)
    assert np.array_equal(cached, full)


@pytest.mark.parametrize("bad", ["RMS", "batch", "", None, 1, "layer "])
@pytest.mark.parametrize("cls", [sf.Transformer, sf.Seq2SeqTransformer])
def test_an_unknown_norm_type_is_refused_naming_it(cls, bad):
    with pytest.raises((ValueError, TypeError), match="norm_type"):
        cls(6, d_model=8, norm_type=bad)


def test_from_torch_reads_rmsnorm_and_refuses_a_dtype_dependent_eps(torch):
    model = randomize(sf.Transformer(6, d_model=8, norm="pre", final_norm=True, norm_type="rms", ln_eps=1e-4,
                                     dtype="float64"), 1, 0.5)
    module = interop.to_torch(model)
    back = interop.from_torch(module)
    assert back.config["norm_type"] == "rms" and back.config["ln_eps"] == 1e-4
    assert np.array_equal(back.flat, model.flat)
    for layer in module.encoders.layers:
        layer.norm1 = torch.nn.RMSNorm(8, eps=None, dtype=torch.float64)
    with pytest.raises(ValueError, match="eps"):
        interop.from_torch(module)
