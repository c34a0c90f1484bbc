"""The seq2seq engine against PyTorch's nn.Transformer (``interop.to_torch``: the official
``TorchModelWithScratchpad``). Spec: reference/paper.md §3.2, §8, §9 items 6 and 8.

* float64, every parameter random (LayerNorm gains and biases included, so no index mix-up hides
  behind the init): the outputs at every decoder position, the teacher-forced loss and the
  gradient of every tensor agree to ``||ours - torch|| / ||torch|| <= 1e-10`` (measured ~1e-15;
  the margin is the one argued in test_torch_equivalence.py).
* float32 error against a float64 reference is at most 3x torch's own float32 error.
* names, order, shapes, the 34,641 non-positional parameters at d=32, and nn.Transformer's init
  (xavier on every matrix, so layers differ; FFN biases copied within a stack).
"""

from __future__ import annotations

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import interop
from sensiformer.tests import _support
from sensiformer.tests._support import randomize

pytestmark = pytest.mark.torch

F64_RTOL = 1e-10
ACTIVATIONS = ["relu", "gelu", "gelu_tanh"]


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = float(np.linalg.norm(ref.ravel()))
    diff = float(np.linalg.norm((ours - ref).ravel()))
    return diff / scale if scale > 0 else diff


def torch_reference(torch, module, x, dec, y, loss):
    """The shipped reference (sensiformer.tests._support) on (x, decoder input)."""
    return _support.torch_reference(torch, module, (x, dec), y, loss)


def make_configs(count=16, seed=20240611):
    """Random small configurations: both norms x three activations first, then random heads,
    widths, d_ff != d_model, encoder/decoder depths (1-3, unequal too), eps, lengths (T < n too),
    batch sizes, and decoder inputs of n+1 (teacher forcing), shorter, or free tokens."""
    rng = np.random.default_rng(seed)
    configs = []
    for i in range(count):
        norm = ("post", "pre")[i % 2]
        activation = ACTIVATIONS[(i // 2) % 3]
        n_heads = int(rng.integers(1, 4))
        d_model = int(rng.choice([d for d in range(4, 17, 2) if d % n_heads == 0]))
        d_ff = d_model + int(rng.choice([-2, -1, 1, 3, 6]))
        n_positions = int(rng.integers(2, 9))
        seq_len = n_positions if i % 3 else int(rng.integers(1, n_positions + 1))
        configs.append(dict(
            model=dict(n_positions=n_positions, d_model=d_model, n_heads=n_heads, n_layers=1 + i % 3,
                       n_decoder_layers=1 + (i // 3) % 3, d_ff=d_ff, norm=norm, activation=activation,
                       ln_eps=1e-5 if i % 4 == 0 else float(10 ** rng.uniform(-7, -2))),
            seq_len=seq_len, batch=1 + i % 7, decoder=("teacher", "short", "free")[i % 3], seed=100 + i))
    return configs


CONFIGS = make_configs()


def config_id(c):
    m = c["model"]
    return (f"{m['norm']}-{m['activation']}-d{m['d_model']}h{m['n_heads']}L{m['n_layers']}+{m['n_decoder_layers']}"
            f"ff{m['d_ff']}-T{c['seq_len']}of{m['n_positions']}-B{c['batch']}-{c['decoder']}")


def _data(c, rng):
    B, T = c["batch"], c["seq_len"]
    x = rng.integers(0, 2, size=(B, T), dtype=np.uint8)
    if c["decoder"] == "teacher":  # [SOS, prefix parities]: the official training input
        y = (np.cumsum(x, axis=1) % 2).astype(np.float64)
        return x, sf.Seq2SeqTransformer.teacher_forcing(y), y
    S = int(rng.integers(1, c["model"]["n_positions"] + 2))
    dec = rng.integers(0, 3, size=(B, S), dtype=np.uint8)  # SOS anywhere too
    L = S if c["decoder"] == "free" else int(rng.integers(1, S + 1))
    return x, dec, rng.normal(size=(B, L))


def check_f64(torch, c, scale=0.5):
    model = randomize(sf.Seq2SeqTransformer(dtype="float64", **c["model"]), c["seed"], scale)
    module = interop.to_torch(model)
    rng = np.random.default_rng(c["seed"] + 1)
    x, dec, y = _data(c, rng)
    worst = {}
    ref_out, _, _ = torch_reference(torch, module, x, dec, y, "mse")
    out = model.forward(x, dec)
    assert out.shape == dec.shape and out.dtype == np.float64
    worst["forward"] = rel_err(out, ref_out)
    bits = rng.integers(0, 2, size=y.shape).astype(np.float64)
    for loss, labels in (("mse", y), ("bce", bits)):
        _, ref_loss, ref_grads = torch_reference(torch, module, x, dec, labels, loss)
        value, grads = model.loss_and_grad(x, labels, decoder_input=dec, loss=loss)
        assert list(grads) == [n for n, _ in module.named_parameters()], "names or order differ from torch"
        worst[f"{loss} value"] = abs(value - ref_loss) / abs(ref_loss)
        for name, g in grads.items():
            worst[f"{loss} grad {name}"] = rel_err(g, ref_grads[name])
    bad = {k: v for k, v in worst.items() if not v <= F64_RTOL}
    assert not bad, f"relative errors above {F64_RTOL}: {bad}"
    return max(worst.values())


def test_config_grid_is_covered():
    ms = [c["model"] for c in CONFIGS]
    assert {(m["norm"], m["activation"]) for m in ms} == {(n, a) for n in ("post", "pre") for a in ACTIVATIONS}
    assert {m["n_heads"] for m in ms} == {1, 2, 3}
    assert {m["n_layers"] for m in ms} == {1, 2, 3} and {m["n_decoder_layers"] for m in ms} == {1, 2, 3}
    assert any(m["n_layers"] != m["n_decoder_layers"] for m in ms)
    assert all(m["d_ff"] != m["d_model"] for m in ms)
    assert {c["decoder"] for c in CONFIGS} == {"teacher", "short", "free"}
    assert any(c["seq_len"] < c["model"]["n_positions"] for c in CONFIGS)


@pytest.mark.parametrize("c", CONFIGS, ids=config_id)
def test_outputs_and_gradients_match_torch_float64(torch, c):
    check_f64(torch, c)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_paper_sized_model_matches_torch_float64(torch, norm):
    """The paper's d=32 scratchpad model at n=20 (wider and longer: the GEMM's full tiles)."""
    c = dict(model=dict(n_positions=20, d_model=32, n_heads=2, n_layers=2, n_decoder_layers=2, d_ff=32, norm=norm,
                        activation="relu", ln_eps=1e-5), seq_len=20, batch=6, decoder="teacher", seed=7)
    check_f64(torch, c, scale=0.2)


def test_float32_error_is_comparable_to_torch(torch):
    """Our float32 error vs a float64 reference is within 3x of torch's float32 error (+ a floor)."""
    cfg = dict(n_positions=12, d_model=16, n_heads=2, n_layers=2, activation="gelu")
    m64 = randomize(sf.Seq2SeqTransformer(dtype="float64", **cfg), 3, 0.3)
    m32 = m64.astype("float32")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(8, 12), dtype=np.uint8)
    y = (np.cumsum(x, axis=1) % 2).astype(np.float64)
    dec = m64.teacher_forcing(y)
    ref_out, _, ref_grads = torch_reference(torch, interop.to_torch(m64), x, dec, y, "mse")
    t_out, _, t_grads = torch_reference(torch, interop.to_torch(m64, dtype=torch.float32), x, dec, y, "mse")
    _, ours = m32.loss_and_grad(x, y)
    floor = 1e-6
    assert rel_err(m32.forward(x, dec), ref_out) <= 3 * rel_err(t_out, ref_out) + floor
    for name in ref_grads:
        assert rel_err(ours[name], ref_grads[name]) <= 3 * rel_err(t_grads[name], ref_grads[name]) + floor, name


def test_names_shapes_and_paper_parameter_count(torch):
    """TorchModelWithScratchpad's named_parameters(); 34,641 non-positional parameters at d=32."""
    model = sf.Seq2SeqTransformer(32, d_model=32, n_heads=2, n_layers=2)
    module = interop.to_torch(model)
    assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == [
        (n, v.shape) for n, v in model.parameters().items()]
    non_positional = sum(t["size"] for t in model.tensor_info if t["kind"] != "positional")
    assert non_positional == 34641
    assert model.parameters()["positional_encoding.weight"].shape == (33, 16)
    assert model.parameters()["embedding.weight"].shape == (3, 16)


def test_init_follows_nn_transformer(torch):
    """xavier_uniform on every matrix inside nn.Transformer (layers differ), zero attention biases,
    FFN biases copied within a stack (torch's clone precedes _reset_parameters), N(0,1)
    embeddings, Linear defaults for the readout, LayerNorms 1/0."""
    d, F = 32, 48
    model = sf.Seq2SeqTransformer(40, d_model=d, d_ff=F, n_layers=3, n_decoder_layers=2, seed=3)
    p = model.parameters()
    for name, w in p.items():
        if name.startswith("model.") and w.ndim == 2:
            bound = np.sqrt(6.0 / (w.shape[0] + w.shape[1]))
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound, name
            assert abs(w.std() - bound / np.sqrt(3)) < 0.1 * bound, name
        elif name.endswith(("in_proj_bias", "out_proj.bias")):
            assert not w.any(), name
        elif "norm" in name:
            assert np.all(w == (1.0 if name.endswith("weight") else 0.0)), name
    for stack, layers in (("encoder", 3), ("decoder", 2)):
        pre = f"model.{stack}.layers"
        for i in range(1, layers):
            assert not np.array_equal(p[f"{pre}.{i}.linear1.weight"], p[f"{pre}.0.linear1.weight"])
            assert not np.array_equal(p[f"{pre}.{i}.self_attn.in_proj_weight"], p[f"{pre}.0.self_attn.in_proj_weight"])
            for b in ("linear1.bias", "linear2.bias"):
                np.testing.assert_array_equal(p[f"{pre}.{i}.{b}"], p[f"{pre}.0.{b}"])
    assert not np.array_equal(p["model.encoder.layers.0.linear1.bias"][:F], p["model.decoder.layers.0.linear1.bias"])
    assert np.abs(p["model.encoder.layers.0.linear1.bias"]).max() <= 1 / np.sqrt(d)
    assert np.abs(p["model.encoder.layers.0.linear2.bias"]).max() <= 1 / np.sqrt(F)
    assert abs(p["positional_encoding.weight"].std() - 1) < 0.1 and abs(p["embedding.weight"].std() - 1) < 0.4
    assert np.abs(p["linear_head.weight"]).max() <= 1 / np.sqrt(d)
    # torch's own init has the same structure (the property the comparison above relies on)
    module = interop.scratchpad_module_class()(40, d_model=d, d_ff=F, n_layers=3, n_decoder_layers=2)
    t = dict(module.named_parameters())
    assert torch.equal(t["model.encoder.layers.1.linear1.bias"], t["model.encoder.layers.0.linear1.bias"])
    assert not torch.equal(t["model.encoder.layers.1.linear1.weight"], t["model.encoder.layers.0.linear1.weight"])
    independent = sf.Seq2SeqTransformer(40, d_model=d, d_ff=F, n_layers=3, seed=3, identical_layers=False)
    q = independent.parameters()
    assert not np.array_equal(q["model.encoder.layers.1.linear1.bias"], q["model.encoder.layers.0.linear1.bias"])


def test_state_dict_moves_both_ways(torch):
    model = randomize(sf.Seq2SeqTransformer(6, d_model=8, n_decoder_layers=3, dtype="float64"), 0)
    module = interop.to_torch(model)
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), model.parameters()[name])
    back = interop.from_torch(module)
    assert isinstance(back, sf.Seq2SeqTransformer) and back.config["n_decoder_layers"] == 3
    np.testing.assert_array_equal(back.flat, model.flat)
    fresh = sf.Seq2SeqTransformer(6, d_model=8, n_decoder_layers=3, dtype="float64")
    fresh.load_state_dict(module.state_dict())
    np.testing.assert_array_equal(fresh.flat, model.flat)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_generate_matches_the_official_autoregressive_answer(torch, norm):
    """Our KV-cached decoding gives the official full-recomputation tokens."""
    model = randomize(sf.Seq2SeqTransformer(9, d_model=12, n_heads=3, norm=norm, dtype="float64"), 5, 0.4)
    x = np.random.default_rng(1).integers(0, 2, size=(16, 9), dtype=np.uint8)
    official = interop.to_torch(model).autoregressive_answer(torch.from_numpy(x.astype(np.int64))).numpy()
    np.testing.assert_array_equal(model.generate(x), official)
