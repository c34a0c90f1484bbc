"""Positional encodings as a model option (issue 17, item 5): ``positional="concat"`` (the paper's
learned table concatenated with the token embedding), ``"add"`` (a learned full-width table added),
``"sinusoidal"`` (the original transformer's fixed table added), ``"none"`` and ``"rope"`` (rotary
embeddings of every self-attention's queries and keys), for both model kinds. Checked against
PyTorch in float64 (forward, gradients, Hessian-vector products), the sinusoids against the
textbook formula, RoPE's logits against a NumPy complex-number rotation, "none" by what it means
(the encoder sees a multiset), and the plumbing a new option needs (names, exclusion from
sharpness, files, decoding, bad input)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import interop, probes
from sensiformer.tests._support import randomize

import test_hvp  # the PyTorch references, made importable by conftest.py
import test_seq2seq_hessian
import test_seq2seq_torch
import test_torch_equivalence

NEW = ["add", "sinusoidal", "none", "rope"]
# narrow heads, and wide heads with B > 2 (layer 0 on the distinct (token, position) rows, scores from a table)
WIDTHS = [dict(d_model=8, n_heads=2, d_ff=12), dict(d_model=32, n_heads=2, d_ff=24)]


@pytest.mark.parametrize("positional", NEW)
@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"d{w['d_model']}")
def test_encoder_matches_torch_float64(torch, random_model, positional, norm, width):
    cfg = dict(n_positions=7, n_layers=2, norm=norm, positional=positional, activation="gelu", **width)
    test_torch_equivalence._check_f64(torch, random_model, cfg, seq_len=7, batch=6, seed=3)


@pytest.mark.parametrize("positional", NEW)
@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"d{w['d_model']}")
def test_seq2seq_matches_torch_float64(torch, positional, width):
    model = dict(n_positions=6, n_layers=2, n_decoder_layers=2, norm="post", positional=positional,
                 activation="relu", ln_eps=1e-5, **width)
    for decoder in ("teacher", "free"):
        test_seq2seq_torch.check_f64(torch, dict(model=model, seq_len=5, batch=5, decoder=decoder, seed=11))


@pytest.mark.parametrize("positional", NEW)
def test_encoder_hvp_matches_torch_double_backward(torch, random_model, positional):
    model = random_model(n_positions=7, d_model=8, seed=3, norm="pre", positional=positional)
    x, y = test_hvp.data(6, 5, seed=1, labels="real")
    V = np.random.default_rng(2).normal(size=(2, model.num_parameters))
    ours = sf.probes.hvp(model, x, y, V)
    assert test_hvp.worst_block_error(model, ours, test_hvp.torch_hvp(torch, model, x, y, V)) <= 1e-10


@pytest.mark.parametrize("positional", NEW)
def test_seq2seq_hvp_matches_torch_double_backward(torch, positional):
    model = test_seq2seq_hessian.random_model(seed=3, positional=positional)
    x, y = test_seq2seq_hessian.data(5)
    V = np.random.default_rng(2).normal(size=(2, model.num_parameters))
    ours = sf.probes.hvp(model, x, y, V)
    ref = test_seq2seq_hessian.torch_hvp(torch, model, x, model.teacher_forcing(y), y, V, "mse")
    assert test_seq2seq_hessian.worst_tensor_error(model, ours, ref) <= 1e-10


def test_sinusoids_follow_the_original_transformer(torch):
    """PE(t, 2i) = sin(t / 10000^(2i/d)), PE(t, 2i+1) = cos(t / 10000^(2i/d)): a model with a zero
    token table outputs the readout of exactly that table (one layer, no norm, zero attention and FFN)."""
    d, n = 8, 5
    model = sf.Transformer(n, d_model=d, n_layers=1, norm="none", positional="sinusoidal", dtype="float64")
    params = model.parameters()
    for name, value in params.items():
        value[...] = 0
    head = np.random.default_rng(0).normal(size=d)
    params["linear_head.weight"][0] = head
    pe = np.array([[np.sin(t / 10000 ** (j / d)) if j % 2 == 0 else np.cos(t / 10000 ** ((j - 1) / d))
                    for j in range(d)] for t in range(n)])
    for length in range(1, n + 1):
        out = model.forward(np.zeros((1, length), dtype=np.uint8))
        assert out[0] == pytest.approx(pe[length - 1] @ head, rel=1e-14, abs=1e-14)


@pytest.mark.parametrize("cls", [sf.Transformer, sf.Seq2SeqTransformer])
def test_without_positions_the_encoder_sees_a_multiset(cls):
    """positional='none': permuting the input leaves the encoder model's output (and, for the seq2seq
    model, every decoder output) unchanged; with positions it does not."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(16, 7), dtype=np.uint8)
    perm = rng.permutation(7)
    for positional, invariant in (("none", True), ("add", False)):
        model = randomize(cls(7, d_model=16, positional=positional, dtype="float64", seed=1), 2, 0.5)
        if cls is sf.Transformer:  # the readout position is the last one: keep it in place
            perm_last = np.r_[rng.permutation(6), 6]
            a, b = model.forward(x), model.forward(x[:, perm_last])
        else:
            dec = rng.integers(0, 3, size=(16, 4), dtype=np.uint8)
            a, b = model.forward(x, dec), model.forward(x[:, perm], dec)
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12) == invariant, positional


def test_tables_names_and_the_sharpness_default_exclusion():
    shapes = {p: {k: v.shape for k, v in sf.Transformer(6, d_model=16, positional=p).state_dict().items()
                  if k.startswith(("embedding", "positional"))} for p in ("concat", "add", "sinusoidal", "none", "rope")}
    assert shapes["concat"] == {"embedding.weight": (2, 8), "positional_encoding.weight": (6, 8)}
    assert shapes["add"] == {"embedding.weight": (2, 16), "positional_encoding.weight": (6, 16)}
    assert shapes["sinusoidal"] == shapes["none"] == shapes["rope"] == {"embedding.weight": (2, 16)}
    s2s = sf.Seq2SeqTransformer(6, d_model=16, positional="add").state_dict()
    assert s2s["embedding.weight"].shape == (3, 16) and s2s["positional_encoding.weight"].shape == (7, 16)
    model = sf.Transformer(6, d_model=16, positional="add")
    mask = probes.tensor_mask(model)
    excluded = [t["name"] for t, keep in zip(model.tensor_info, mask) if not keep]
    assert excluded == ["positional_encoding.weight"]  # learned tables stay out of sharpness by default


@pytest.mark.parametrize("positional", NEW)
@pytest.mark.parametrize("cls", [sf.Transformer, sf.Seq2SeqTransformer])
def test_training_is_deterministic_and_files_keep_the_option(tmp_path, cls, positional):
    target = sf.targets.Parity(6) if cls is sf.Transformer else sf.targets.PrefixParity(6)
    flats = []
    for threads in (1, 2):
        model = cls(6, d_model=32, n_layers=2, positional=positional, seed=1)
        sf.Trainer(model, target, batch_size=32, seed=2, n_threads=threads).fit(15, progress=False)
        flats.append(model.flat.copy())
    assert np.array_equal(flats[0], flats[1]) and np.all(np.isfinite(flats[0]))
    model.save(tmp_path / "m.npz")
    loaded = sf.load(tmp_path / "m.npz")
    assert loaded.config["positional"] == positional and np.array_equal(loaded.flat, model.flat)
    assert f"positional={positional!r}" in repr(loaded)


@pytest.mark.parametrize("positional", NEW)
def test_cached_decoding_equals_the_full_model(positional):
    model = randomize(sf.Seq2SeqTransformer(7, d_model=16, positional=positional, dtype="float64"), 3, 0.5)
    x = np.random.default_rng(1).integers(0, 2, size=(9, 7))
    assert np.array_equal(model.generate(x, cache=True), model.generate(x, cache=False))


@pytest.mark.parametrize("positional", ["concat", "add", "sinusoidal", "none", "rope"])
def test_from_torch_reads_the_option(torch, positional):
    model = randomize(sf.Transformer(6, d_model=8, positional=positional, rope_base=500.0, dtype="float64"), 1, 0.5)
    module = interop.to_torch(model)
    back = interop.from_torch(module, n_positions=6)
    assert back.config["positional"] == positional and np.array_equal(back.flat, model.flat)
    if positional == "rope":
        assert back.config["rope_base"] == 500.0
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 2, size=(4, 6)))
    with torch.no_grad():  # inference mode too: the fused encoder path must stay off for rotary attention
        np.testing.assert_allclose(module.eval()(x).numpy(), model.forward(x.numpy()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("base", [10000.0, 50.0])
def test_rope_logits_equal_a_complex_rotation_in_numpy(base):
    """One layer, no norm: the first layer's attention logits q_t . k_s / sqrt(dh) with q and k turned
    as complex numbers, (x_i + i x_{i+dh/2}) e^{i t base^(-2i/dh)}, independently of the engine's kernel."""
    d, H, n, B = 8, 2, 6, 5
    model = randomize(sf.Transformer(n, d_model=d, n_heads=H, n_layers=1, norm="none", positional="rope",
                                     rope_base=base, dtype="float64"), 4, 0.7)
    p = model.parameters()
    x = np.random.default_rng(1).integers(0, 2, size=(B, n))
    emb = p["embedding.weight"][x]
    w, b = p["encoders.layers.0.self_attn.in_proj_weight"], p["encoders.layers.0.self_attn.in_proj_bias"]
    q, k = emb @ w[:d].T + b[:d], emb @ w[d:2 * d].T + b[d:2 * d]
    dh, half = d // H, d // H // 2
    angle = np.arange(n)[:, None] * base ** (-2 * np.arange(half) / dh)

    def turn(v):  # (B, n, H, dh) -> the same, rotated
        v = v.reshape(B, n, H, dh)
        z = (v[..., :half] + 1j * v[..., half:]) * np.exp(1j * angle)[None, :, None, :]
        return np.concatenate([z.real, z.imag], axis=-1)

    # |q . k| / sqrt(dh) of the one query that reaches the output (the last position) against every key
    logits = np.abs(np.einsum("bhj,bshj->bhs", turn(q)[:, -1], turn(k))) / np.sqrt(dh)
    ours = probes.attention_logit_scale(model, x)
    np.testing.assert_allclose(ours["max"][0], logits.max(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(ours["mean"][0], logits.mean(axis=(0, 2)), rtol=1e-12)


@pytest.mark.parametrize("cls", [sf.Transformer, sf.Seq2SeqTransformer])
def test_rope_needs_even_head_widths_and_a_positive_base(cls):
    with pytest.raises(ValueError, match="d_model / n_heads"):
        cls(6, d_model=6, n_heads=2, positional="rope")
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="rope_base"):
            cls(6, d_model=8, positional="rope", rope_base=bad)


def test_from_torch_refuses_to_guess_between_sinusoids_and_none(torch):
    module = interop.to_torch(sf.Transformer(6, d_model=8, positional="none", dtype="float64"))
    del module.positional  # a foreign module: the tensors cannot tell
    with pytest.raises(ValueError, match="positional"):
        interop.from_torch(module, n_positions=6)
    assert interop.from_torch(module, n_positions=6, positional="none").config["positional"] == "none"


@pytest.mark.parametrize("bad", ["rope ", "Concat", "learned", "", None, 0])
@pytest.mark.parametrize("cls", [sf.Transformer, sf.Seq2SeqTransformer])
def test_an_unknown_positional_is_refused_naming_it(cls, bad):
    with pytest.raises((ValueError, TypeError), match="positional"):
        cls(6, d_model=8, positional=bad)


def test_every_option_combines_with_every_norm_type_and_placement():
    for positional, norm_type, norm in itertools.product(["concat", "add", "sinusoidal", "none"], ["layer", "rms"],
                                                         ["post", "pre", "none"]):
        model = sf.Transformer(5, d_model=8, n_layers=1, positional=positional, norm_type=norm_type, norm=norm)
        x = np.random.default_rng(0).integers(0, 2, size=(4, 5))
        loss, grads = model.loss_and_grad(x, sf.targets.Parity(5)(x))
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
