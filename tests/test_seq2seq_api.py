"""Seq2SeqTransformer's API (the Transformer's, plus decoder inputs), its bad-input errors, the
prefix targets, probes (LayerNorm blowup against torch hooks, sharpness, norms) and the Trainer."""

from __future__ import annotations

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import _native

PARITY_N = 6


def small(seed=0, dtype="float64", **kwargs):
    cfg = dict(n_positions=PARITY_N, d_model=8, n_heads=2, n_layers=2)
    cfg.update(kwargs)
    return sf.Seq2SeqTransformer(dtype=dtype, seed=seed, **cfg)


def batch(rows=5, n=PARITY_N, seed=0):
    x = np.random.default_rng(seed).integers(0, 2, size=(rows, n), dtype=np.uint8)
    return x, (np.cumsum(x, axis=1) % 2).astype(np.float64)


# ---- model API ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parameters_are_zero_copy_views_in_official_order(dtype):
    model = small(dtype=dtype)
    names = list(model.parameters())
    assert names[:2] == ["embedding.weight", "positional_encoding.weight"]
    assert names[2] == "model.encoder.layers.0.self_attn.in_proj_weight"
    assert names[-4:] == ["model.decoder.norm.weight", "model.decoder.norm.bias", "linear_head.weight",
                          "linear_head.bias"]
    x, y = batch()
    before = model.loss(x, y)
    model.parameters()["linear_head.bias"][0] += 1.0  # writes through to the engine
    assert model.flat[-1] == model.parameters()["linear_head.bias"][0]
    assert model.loss(x, y) != before
    assert model.parameters()["embedding.weight"].dtype == np.dtype(dtype)
    info = {t["name"]: t for t in model.tensor_info}
    assert info["model.decoder.layers.1.norm3.weight"]["layer"] == 3  # decoder layers follow the encoder's
    assert info["model.encoder.layers.1.linear1.bias"]["layer"] == 1 and info["embedding.weight"]["layer"] == -1


def test_state_dict_copies_load_astype_copy_and_files(tmp_path):
    model = small(n_decoder_layers=3, norm="pre")
    model.flat[:] = np.random.default_rng(0).normal(size=model.flat.size)
    state = model.state_dict()
    state["linear_head.bias"][0] = 99.0
    assert model.parameters()["linear_head.bias"][0] != 99.0
    other = small(seed=5, n_decoder_layers=3, norm="pre")
    other.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(other.flat, model.flat)
    f32 = model.astype("float32")
    assert isinstance(f32, sf.Seq2SeqTransformer) and f32.dtype == np.float32 and f32.config["n_decoder_layers"] == 3
    np.testing.assert_allclose(f32.astype("float64").flat, model.flat, rtol=1e-6)
    np.testing.assert_array_equal(model.copy().flat, model.flat)
    path = tmp_path / "s2s.npz"
    model.save(path)
    loaded = sf.load(path)
    assert isinstance(loaded, sf.Seq2SeqTransformer) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.flat, model.flat)
    with pytest.raises(KeyError):
        small().load_state_dict({"embedding.weight": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="shape"):
        small().load_state_dict({**small().state_dict(), "embedding.weight": np.zeros((2, 4))})


def test_init_is_reproducible_by_seed():
    a, b, c = small(seed=1), small(seed=1), small(seed=2)
    np.testing.assert_array_equal(a.flat, b.flat)
    assert not np.array_equal(a.flat, c.flat)
    a.flat[:] = 0
    a.reinitialize()
    np.testing.assert_array_equal(a.flat, b.flat)


def test_loss_is_the_teacher_forced_mse_of_the_official_code():
    model = small()
    x, y = batch(rows=9)
    out = model.forward(x, model.teacher_forcing(y))
    assert out.shape == (9, PARITY_N + 1)
    official = np.mean((out[:, :-1] - y) ** 2)  # [SOS, y] in, last output dropped
    assert model.loss(x, y) == pytest.approx(official, rel=1e-13)
    # by causality, [SOS, y_1..y_{n-1}] gives the same loss
    assert model.loss(x, y, decoder_input=model.teacher_forcing(y)[:, :-1]) == pytest.approx(official, rel=1e-13)
    value, grads = model.loss_and_grad(x, y)
    assert value == pytest.approx(official, rel=1e-13)
    assert list(grads) == list(model.parameters())
    # the last decoder position reaches nothing, so the last positional row gets no gradient from it
    assert not grads["positional_encoding.weight"][PARITY_N].any()
    for name, g in model.gradients().items():
        np.testing.assert_array_equal(g, grads[name])


def test_results_do_not_depend_on_thread_count():
    model = sf.Seq2SeqTransformer(16, d_model=32, dtype="float32", seed=1)
    x, y = batch(rows=256, n=16, seed=1)  # large enough for the parallel paths
    runs = []
    for nt in (1, 2):
        value, grads = model.loss_and_grad(x, y, n_threads=nt)
        runs.append((value, np.concatenate([g.ravel() for g in grads.values()]), model.forward(x, model.teacher_forcing(y), n_threads=nt)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][2], runs[1][2])


# ---- bad input ----------------------------------------------------------------------------------
BAD_MODEL = [
    (dict(n_positions=4, norm="none"), ValueError, "norm"),
    (dict(n_positions=4, d_model=7), ValueError, "even"),
    (dict(n_positions=4, d_model=8, n_heads=3), ValueError, "divisible"),
    (dict(n_positions=0), ValueError, "n_positions"),
    (dict(n_positions=4, n_decoder_layers=0), ValueError, "n_decoder_layers"),
    (dict(n_positions=4, n_decoder_layers=65), ValueError, "n_decoder_layers"),
    (dict(n_positions=4, identical_layers="yes"), TypeError, "identical_layers"),
]


@pytest.mark.parametrize("kwargs, error, pattern", BAD_MODEL)
def test_bad_constructor_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        sf.Seq2SeqTransformer(**kwargs)


def test_bad_inputs_raise_clear_errors():
    model = small()
    x, y = batch(rows=3)
    dec = model.teacher_forcing(y)
    cases = [
        (lambda: model.forward(x, None), TypeError, "decoder_input"),
        (lambda: model.forward(x, dec[0]), ValueError, r"shape \(3, length\)"),
        (lambda: model.forward(x, dec[:2]), ValueError, r"shape \(3, length\)"),
        (lambda: model.forward(x, np.full((3, 4), 3)), ValueError, "0, 1 or SOS=2"),
        (lambda: model.forward(x, np.full((3, 4), -1)), ValueError, "0, 1 or SOS=2"),
        (lambda: model.forward(x, dec.astype(float)), TypeError, "integer"),
        (lambda: model.forward(x, np.zeros((3, PARITY_N + 2), int)), ValueError, "n_positions\\+1"),
        (lambda: model.forward(x, np.zeros((3, 0), int)), ValueError, "length >= 1"),
        (lambda: model.forward(np.zeros((3, PARITY_N + 1), int), dec), ValueError, "n_positions"),
        (lambda: model.forward(np.full((3, 4), 2), dec), ValueError, "0 or 1"),
        (lambda: model.loss(x, y[:, None]), ValueError, r"shape \(3, length\)"),
        (lambda: model.loss(x, y[:2]), ValueError, r"shape \(3, length\)"),
        (lambda: model.loss(x, np.full_like(y, np.nan), decoder_input=dec), ValueError, "finite"),
        (lambda: model.loss(x, y + 0.5), ValueError, "0/1"),
        (lambda: model.loss(x, y, decoder_input=dec[:, :2]), ValueError, "2 positions for 6 labels"),
        (lambda: model.loss(x, y, loss="l1"), ValueError, "loss"),
        (lambda: model.loss(x, y - 1, decoder_input=dec, loss="bce"), ValueError, "bce"),
        (lambda: model.generate(x, steps=0), ValueError, "steps"),
        (lambda: model.generate(x, steps=PARITY_N + 2), ValueError, "steps"),
        (lambda: model.generate(x, threshold=float("nan")), ValueError, "threshold"),
        (lambda: model.generate(x[0]), ValueError, "2-D"),
        (lambda: sf.probes.ln_blowup(model, x), TypeError, "decoder_input or y"),
        (lambda: sf.probes.attention_logit_scale(model, x), TypeError, "decoder_input or y"),
        (lambda: sf.probes.autoregressive_accuracy(sf.Transformer(4, d_model=8), x, y), TypeError, "Seq2Seq"),
        (lambda: sf.probes.ln_blowup(sf.Transformer(PARITY_N, d_model=8), x, y=y), TypeError, "Seq2Seq"),
    ]
    for call, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            call()


def test_the_engine_guards_itself():
    """Below the Python checks, the C entry points refuse what would read out of bounds."""
    model = small()
    x, y = batch(rows=3)
    dec = model.teacher_forcing(y)
    fwd = lambda m, x, dec=None: _native.forward(model=m._engine, x=x, decoder_input=dec, n_threads=1)  # noqa: E731
    with pytest.raises(ValueError, match="SOS=2"):
        fwd(model, x, np.full_like(dec, 3))
    with pytest.raises(ValueError, match="n_positions\\+1"):
        fwd(model, x, np.zeros((3, PARITY_N + 2), np.uint8))
    with pytest.raises(ValueError, match="labels for 1 to S"):
        _native.loss_and_grad(model=model._engine, x=x, y=y, decoder_input=np.ascontiguousarray(dec[:, :2]), loss=0,
                              grad=True, n_threads=1)
    with pytest.raises(ValueError, match="rows"):
        fwd(model, x, dec[:2])
    with pytest.raises(ValueError, match="seq2seq model"):  # the seq2seq model without decoder inputs
        fwd(model, x)
    with pytest.raises(ValueError, match="encoder model"):
        _native.generate(model=sf.Transformer(4, d_model=8)._engine, x=np.ascontiguousarray(x[:, :4]), steps=3,
                         cache=True, threshold=0.5, n_threads=1)
    with pytest.raises(ValueError, match="seq2seq model"):  # the HVP without decoder inputs
        _native.hvp(model=model._engine, x=x, y=y[:, 0].copy(), batch_size=3, loss=0,
                    v=np.zeros((1, model.num_parameters)), n_threads=1)
    with pytest.raises(ValueError, match="decoder inputs"):  # the encoder model given decoder inputs
        _native.forward(model=sf.Transformer(4, d_model=8)._engine, x=np.ascontiguousarray(x[:, :4]),
                        decoder_input=dec, n_threads=1)


# ---- targets -------------------------------------------------------------------------------------
def test_prefix_targets():
    x, y = batch(rows=50, n=9)
    t = sf.targets.PrefixParity(9)
    assert t.sequence and t.boolean and repr(t) == "PrefixParity(n=9)"
    np.testing.assert_array_equal(t(x), y)
    np.testing.assert_array_equal(t(x)[:, -1], sf.targets.Parity(9)(x))
    np.testing.assert_array_equal(t(x, scale="pm1"), 1 - 2 * y)
    maj = sf.targets.Prefix(sf.targets.Majority(9))
    np.testing.assert_array_equal(maj(x)[:, -1], sf.targets.Majority(9)(x))
    np.testing.assert_array_equal(maj(x)[:, 3], sf.targets.Majority(4)(x[:, :4]))
    np.testing.assert_allclose(sf.targets.Prefix(sf.targets.Mean(9))(x)[:, 4], x[:, :5].mean(axis=1))
    np.testing.assert_array_equal(sf.targets.Prefix(sf.targets.First(9))(x), np.repeat(x[:, :1], 9, axis=1))
    assert t == sf.targets.PrefixParity(9) and t != sf.targets.PrefixParity(8)
    with pytest.raises(TypeError, match="prefix labels"):
        sf.targets.Prefix(sf.targets.RandomFunction(4))
    with pytest.raises(TypeError, match="per position"):
        t.truth_table()


def test_training_stream_labels_and_noise():
    t = sf.targets.PrefixParity(7, noise=0.2)
    x, y = _native.sample_batch(target=t.engine_spec(), sampler=(0, None, None, None), seed=3, step=11, batch_size=64,
                                seq_len=7)
    assert y.shape == (64, 7)
    np.testing.assert_array_equal(y, t.noisy(x, seed=3, step=11))
    flips = y != sf.targets.PrefixParity(7)(x)
    assert 0.1 < flips.mean() < 0.3 and flips.any(axis=0).all()  # flipped per position


# ---- probes --------------------------------------------------------------------------------------
def torch_blowup(torch, module, x, dec, official):
    """Per LayerNorm (batch mean of) the per-sample max and mean of 1/std (torch.std, unbiased) of
    its input, with forward hooks as the official register_hooks; official: norm1/norm2 only, the
    last layer of each stack at its last position (paper.md §1.4, §9.6)."""
    seen = {}
    hooks = [mod.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0].detach()))
             for name, mod in module.named_modules() if isinstance(mod, torch.nn.LayerNorm)]
    module(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(dec.astype(np.int64)))
    for h in hooks:
        h.remove()
    result = {}
    for name, inp in seen.items():
        parts = name.split(".")
        if official and (parts[-1] == "norm3" or parts[-2] != "layers" and not parts[-2].isdigit()):
            continue
        if official and parts[-2] in ("encoder", "decoder"):
            continue
        inv = 1 / inp.std(dim=2)
        if official:
            last = module.model.encoder.num_layers - 1 if parts[1] == "encoder" else len(module.model.decoder.layers) - 1
            if int(parts[3]) == last:
                inv = inv[:, -1:]
        result[name] = (inv.max(dim=1).values.mean().item(), inv.mean().item(), inv)
    return result


@pytest.mark.torch
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_ln_blowup_matches_torch_hooks(torch, norm):
    from sensiformer import interop

    model = small(norm=norm, n_decoder_layers=3, d_model=12, n_heads=3)
    model.flat[:] = np.random.default_rng(2).normal(scale=0.5, size=model.flat.size)
    module = interop.to_torch(model)
    x, y = batch(rows=7)
    dec = model.teacher_forcing(y)
    ours = sf.probes.ln_blowup(model, x, y=y, per_sample=True)
    assert len(ours["maxs"]) == len(sf.probes.ln_names(model)) == (2 * 2 + 1) + (3 * 3 + 1) + 2 * 2 + 2 * 3
    for official in (False, True):
        ref = torch_blowup(torch, module, x, dec, official)
        prefix = "official/" if official else ""
        assert {f"{prefix}{n}" for n in ref} == {n for n in sf.probes.ln_names(model) if n.startswith("official/") == official}
        for name, (mx, mn, _) in ref.items():
            assert ours[f"{prefix}{name}/max"] == pytest.approx(mx, rel=1e-10), name
            assert ours[f"{prefix}{name}/mean"] == pytest.approx(mn, rel=1e-10), name
        for part in ("encoder", "decoder"):
            per_ln = [v[2] for k, v in ref.items() if f".{part}." in f".{k}."]
            prod = torch.stack([v.max(dim=1).values for v in per_ln]).prod(dim=0).mean().item()
            assert ours[f"{prefix}{part}/maxs_prod"] == pytest.approx(prod, rel=1e-10)
    np.testing.assert_array_equal(sf.probes.ln_blowup(model, x, decoder_input=dec, per_sample=True)["maxs"],
                                  ours["maxs"])
    theory = sf.probes.ln_blowup(model, x, y=y, definition="theory")
    assert theory["model.decoder.norm/max"] != ours["model.decoder.norm/max"]


@pytest.mark.torch
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_attention_logit_scale_matches_torch(torch, norm):
    """|q.k| / sqrt(d_head) per attention module and head, from the inputs torch's
    MultiheadAttention modules receive (forward pre-hooks); causal: visible keys only."""
    from sensiformer import interop

    model = small(norm=norm, n_decoder_layers=2, d_model=12, n_heads=3)
    model.flat[:] = np.random.default_rng(4).normal(scale=0.5, size=model.flat.size)
    module = interop.to_torch(model)
    x, y = batch(rows=5)
    dec = model.teacher_forcing(y)
    seen = {}
    hooks = [mod.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, (m, args[0], args[1])))
             for name, mod in module.named_modules() if isinstance(mod, torch.nn.MultiheadAttention)]
    module(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(dec.astype(np.int64)))
    for h in hooks:
        h.remove()
    ours = sf.probes.attention_logit_scale(model, x, y=y)
    d, H = 12, 3
    dh = d // H
    for row, name in enumerate(ours["modules"]):
        mha, query, key = seen[name]
        q = (query @ mha.in_proj_weight[:d].T + mha.in_proj_bias[:d]).detach().numpy()
        k = (key @ mha.in_proj_weight[d:2 * d].T + mha.in_proj_bias[d:2 * d]).detach().numpy()
        for h in range(H):
            logits = np.abs(np.einsum("bic,bjc->bij", q[..., h * dh:(h + 1) * dh], k[..., h * dh:(h + 1) * dh]))
            logits /= np.sqrt(dh)
            if "decoder" in name and "self_attn" in name:
                visible = np.tril(np.ones(logits.shape[1:], dtype=bool))
                values = logits[:, visible]
            else:
                values = logits.reshape(len(x), -1)
            assert ours["max"][row, h] == pytest.approx(values.max(), rel=1e-12), (name, h)
            assert ours["mean"][row, h] == pytest.approx(values.mean(), rel=1e-12), (name, h)


def test_sharpness_is_the_teacher_forced_loss_increase():
    model = small()
    x, y = batch(rows=8)
    noise = np.random.default_rng(0).normal(size=(3, model.num_parameters))
    est = sf.probes.sharpness(model, x, y, sigma=0.05, repeats=3, noise=noise, batch_size=4)
    mask = sf.probes.tensor_mask(model)
    base_flat = model.flat.copy()
    expected = []
    for z in noise:
        step = np.concatenate([np.full(t["size"], float(keep)) for t, keep in zip(model.tensor_info, mask)]) * z
        model.flat[:] = base_flat + 0.05 * step
        perturbed = [model.loss(x[:4], y[:4]), model.loss(x[4:], y[4:])]
        model.flat[:] = base_flat
        expected.append(np.mean(perturbed) - np.mean([model.loss(x[:4], y[:4]), model.loss(x[4:], y[4:])]))
    np.testing.assert_allclose(est.samples, expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(model.flat, base_flat)  # restored
    counter = sf.probes.sharpness(model, x, y, repeats=4, seed=1)
    assert counter.value == sf.probes.sharpness(model, x, y, repeats=4, seed=1).value  # common random numbers
    norm = sf.probes.param_norm(model)
    assert norm == pytest.approx(np.sqrt(sum(float((p.astype(np.float64) ** 2).sum())
                                             for n, p in model.parameters().items() if "positional" not in n)))


# ---- training -------------------------------------------------------------------------------------
def make_trainer(model=None, **kwargs):
    model = model or sf.Seq2SeqTransformer(PARITY_N, d_model=8, seed=0)
    kwargs.setdefault("optimizer", sf.AdamW(lr=3e-3, weight_decay=0.1))
    return sf.Trainer(model, sf.targets.PrefixParity(PARITY_N), batch_size=16, seed=4, **kwargs)


def test_trainer_runs_logs_and_evaluates():
    trainer = make_trainer()
    history = trainer.fit(30, log_every=10, progress=False, callbacks=[sf.Measure(every=15, repeats=2, logit_scale=True)])
    assert list(history.step) == [10, 15, 20, 30] and np.isfinite(history.loss).all()
    row = history.set_index("step").loc[15]
    for key in ("sharpness", "blowup_encoder_maxs_prod", "blowup_official_decoder_maxs_prod",
                "autoregressive_accuracy", "sequence_accuracy", "param_norm", "measure_loss", "logit_max"):
        assert np.isfinite(row[key]), key
    ev = trainer.evaluate()  # exact over all 2^6 inputs
    assert ev["n_inputs"] == 64 and set(ev) >= {"loss", "accuracy", "autoregressive_accuracy", "sequence_accuracy"}
    x, y = batch(rows=64)
    assert trainer.step(x, y) > 0


def test_training_is_deterministic_and_resumes_bit_identically(tmp_path):
    a, b = make_trainer(n_threads=1), make_trainer(n_threads=2)
    a.fit(12, progress=False)
    b.fit(12, progress=False)
    np.testing.assert_array_equal(a.model.flat, b.model.flat)
    a.save_checkpoint(tmp_path / "ck.npz")
    c = make_trainer()
    c.load_checkpoint(tmp_path / "ck.npz")
    a.fit(5, progress=False)
    c.fit(5, progress=False)
    np.testing.assert_array_equal(a.model.flat, c.model.flat)


def test_trainer_on_data_and_pm1_labels():
    x, y = batch(rows=40)
    trainer = sf.Trainer(sf.Seq2SeqTransformer(PARITY_N, d_model=8), data=(x, y), batch_size=8)
    trainer.fit(5, progress=False)
    assert trainer.evaluate()["n_inputs"] == 40
    pm1 = make_trainer(labels="pm1")
    pm1.fit(5, progress=False)
    assert np.isfinite(pm1.history.loss).all()


def test_trainer_refuses_mismatched_models_and_targets():
    seq = sf.Seq2SeqTransformer(PARITY_N, d_model=8)
    with pytest.raises(TypeError, match="PrefixParity"):
        sf.Trainer(seq, sf.targets.Parity(PARITY_N))
    with pytest.raises(TypeError, match="Seq2SeqTransformer"):
        sf.Trainer(sf.Transformer(PARITY_N, d_model=8), sf.targets.PrefixParity(PARITY_N))
    with pytest.raises(ValueError, match="Boolean"):
        sf.Trainer(seq, sf.targets.Prefix(sf.targets.Mean(PARITY_N)))
    x, y = batch(rows=4)
    with pytest.raises(ValueError, match="per position"):
        sf.Trainer(seq, data=(x, y[:, 0]))
    with pytest.raises(ValueError, match="0/1"):
        sf.Trainer(seq, data=(x, y + 0.5))
