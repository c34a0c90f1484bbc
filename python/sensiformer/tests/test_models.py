"""Both model kinds on this process's CPU path, with the paper's options and the others (RMSNorm,
positional encodings): gradients against float64 central differences, the float32 build against
the float64 build, the encoder's row kernels (softmax, LayerNorm,
activations, readout) against a NumPy forward, and training bit for bit on 1 and 2 threads."""

import numpy as np
import pytest

import sensiformer as sf

from ._support import encoder_case, numpy_forward, rel_err, seq2seq_case, tokens

KINDS = ["encoder", "seq2seq"]
# the paper's options, and every norm type and positional encoding in some combination
OPTIONS = [{}, dict(norm_type="rms", positional="rope"), dict(positional="add"),
           dict(norm_type="rms", positional="sinusoidal"), dict(positional="none")]
OPTION_IDS = ["paper", "rms-rope", "add", "rms-sinusoidal", "no-positions"]


def case(kind, dtype="float64", seed=0, **options):
    """(model, loss(y) -> value, loss_and_grad, forward): one calling convention for both kinds."""
    if kind == "encoder":
        model, x, y = encoder_case(dtype, seed, **options)
        return model, lambda: model.loss(x, y), lambda: model.loss_and_grad(x, y), lambda: model.forward(x)
    model, x, dec, y = seq2seq_case(dtype, seed, **options)
    return (model, lambda: model.loss(x, y, decoder_input=dec), lambda: model.loss_and_grad(x, y, decoder_input=dec),
            lambda: model.forward(x, dec))


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_central_differences(errors, kind, options):
    """g . v against (L(p + h v) - L(p - h v)) / 2h along random unit directions (each mixes every
    parameter: a wrong term anywhere shows), and every element of the readout and one layer's
    attention input projection. In float64 the difference quotient is good to ~1e-9 (rounding of
    two O(1) losses over 2h): the limit is 1e-6 relative to ||g||."""
    model, loss, loss_and_grad, _ = case(kind, **options)
    value, _ = loss_and_grad()
    g, base = model.flat_grad.copy(), model.flat.copy()
    scale = np.linalg.norm(g) + 1e-9 * max(1.0, abs(value))

    def slope(v, h):
        model.flat[:] = base + h * v
        up = loss()
        model.flat[:] = base - h * v
        down = loss()
        model.flat[:] = base
        return (up - down) / (2 * h)

    rng = np.random.default_rng(5)
    for k in range(4):
        v = rng.normal(size=base.size)
        v /= np.linalg.norm(v)
        errors.check(f"direction {k}", abs(slope(v, 1e-5) - g @ v) / scale, 1e-6)
    offsets = {t["name"]: (t["offset"], t["size"]) for t in model.tensor_info}
    first_layer = next(n for n in offsets if n.endswith("layers.0.self_attn.in_proj_weight"))
    for name in ("linear_head.weight", first_layer):
        start, size = offsets[name]
        for i in range(start, start + min(size, 48)):
            e = np.zeros(base.size)
            e[i] = 1.0
            errors.check(f"{name}[{i - start}]", abs(slope(e, 1e-6) - g[i]) / scale, 1e-6)
    assert loss() == value, "the probing changed the model"


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_float32_build_matches_float64_build(errors, kind, options):
    """The same parameters in float32 and float64: outputs and every gradient tensor agree to
    ~1e-6 relative (float32 rounding 6e-8 amplified by these small, well-conditioned networks;
    an error in one build's code is O(1))."""
    m64, _, loss_and_grad64, forward64 = case(kind, "float64", seed=1, **options)
    m32, _, loss_and_grad32, forward32 = case(kind, "float32", seed=1, **options)
    m32.flat[:] = m64.flat  # the same values (rounded to float32)
    m64.flat[:] = m32.flat
    errors.check("forward", rel_err(forward32(), forward64()), 1e-5)
    v32, g32 = loss_and_grad32()
    v64, g64 = loss_and_grad64()
    errors.check("loss", abs(v32 - v64) / abs(v64), 1e-5)
    for name in g64:
        errors.check(f"grad {name}", rel_err(g32[name], g64[name]), 1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm,activation", [("post", "relu"), ("pre", "gelu_tanh"), ("none", "gelu")])
def test_encoder_forward_matches_numpy(errors, dtype, norm, activation):
    """Widths 16 and 32 (heads of 8 and 16: both attention forms), T = 13 and 20, batch 9 and 40
    (B > 2: layer 0 on distinct rows, scores from a table), against float64 NumPy."""
    limit = 1e-12 if dtype == "float64" else 1e-5
    for d_model, n_positions, batch in ((16, 13, 9), (32, 20, 40)):
        model, _, _ = encoder_case(dtype, seed=d_model, n_positions=n_positions, d_model=d_model, d_ff=d_model + 3,
                                   norm=norm, final_norm=norm == "pre", activation=activation)
        x = tokens(np.random.default_rng(batch), batch, n_positions)
        errors.check(f"d={d_model} T={n_positions}", rel_err(model.forward(x), numpy_forward(model, x)), limit)


@pytest.mark.parametrize("kind", KINDS)
def test_training_is_bitwise_identical_for_1_and_2_threads(errors, kind):
    """Big enough that the engine splits the work over 2 threads (checked)."""
    def train(n_threads):
        if kind == "encoder":
            model, target = sf.Transformer(12, d_model=64, seed=1), sf.targets.Parity(12)
        else:
            model = sf.Seq2SeqTransformer(12, d_model=32, seed=1)
            target = sf.targets.Prefix(sf.targets.Parity(12))
        trainer = sf.Trainer(model, target, optimizer=sf.AdamW(lr=1e-3, weight_decay=0.1), batch_size=256, seed=5,
                             n_threads=n_threads)
        history = trainer.fit(4, log_every=1, progress=False)
        return model, history

    m1, h1 = train(1)
    m2, h2 = train(2)
    assert m2.last_threads == 2, "the 2-thread run did not use 2 threads"
    errors.equal("parameters", m2.flat, m1.flat)
    errors.equal("losses", h2["loss"].to_numpy(), h1["loss"].to_numpy())
