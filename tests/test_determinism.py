"""Bitwise determinism: the same seed gives the same bits with 1 thread or 2, run after run,
and training in pieces equals training in one go (sensiformer.set_num_threads' promise).

The 2-thread calls are kept few and short: on a shared 2-core machine an oversubscribed
OpenMP team can take ~100x longer per parallel region, and this file is part of CI.
"""

from __future__ import annotations

import numpy as np
import pytest

import sensiformer as sf

# Big enough that the engine really splits the work over 2 threads (checked via last_threads).
N_BITS, D_MODEL, BATCH, STEPS = 12, 64, 256, 6


def _train(n_threads, dtype, steps=STEPS, seed=5, model_seed=1):
    model = sf.Transformer(n_positions=N_BITS, d_model=D_MODEL, dtype=dtype, seed=model_seed)
    trainer = sf.Trainer(model, sf.targets.Parity(N_BITS), optimizer=sf.AdamW(lr=1e-3, weight_decay=0.1),
                         batch_size=BATCH, seed=seed, n_threads=n_threads)
    history = trainer.fit(steps, log_every=1, progress=False)
    return model, trainer, history


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_is_bitwise_identical_for_1_and_2_threads(dtype):
    m1, t1, h1 = _train(1, dtype)
    assert m1.last_threads == 1
    m2, t2, h2 = _train(2, dtype)
    assert m2.last_threads == 2, "the 2-thread run did not actually use 2 threads"
    assert np.array_equal(m1.flat, m2.flat)
    for column in ("loss", "accuracy", "grad_norm", "lr"):
        assert np.array_equal(h1[column].to_numpy(), h2[column].to_numpy()), column
    s1, s2 = t1.optimizer.state_dict(), t2.optimizer.state_dict()
    assert np.array_equal(s1["exp_avg"], s2["exp_avg"]) and np.array_equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
    # training really happened
    assert not np.array_equal(m1.flat, sf.Transformer(n_positions=N_BITS, d_model=D_MODEL, dtype=dtype, seed=1).flat)


def test_same_seed_same_bits_different_seed_different_bits():
    a, _, ha = _train(2, "float32", steps=3)
    b, _, hb = _train(2, "float32", steps=3)
    assert np.array_equal(a.flat, b.flat) and np.array_equal(ha["loss"], hb["loss"])
    c, _, hc = _train(1, "float32", steps=3, seed=6)  # another data stream
    assert not np.array_equal(a.flat, c.flat)
    d, _, _ = _train(1, "float32", steps=3, model_seed=2)  # another init
    assert not np.array_equal(a.flat, d.flat)


@pytest.mark.parametrize("batch,dtype", [(BATCH, "float32"), (BATCH, "float64"), (257, "float32"), (3, "float64")])
def test_forward_and_gradients_are_bitwise_identical_across_threads(random_model, dtype, batch):
    """Including batch sizes that do not split evenly (257) or that are smaller than the team."""
    model = random_model(seed=3, scale=0.2, n_positions=N_BITS, d_model=D_MODEL, n_heads=2, n_layers=2,
                         dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(batch, N_BITS), dtype=np.uint8)
    y = rng.integers(0, 2, size=batch).astype(np.float64)

    out1 = model.forward(x, n_threads=1)
    assert model.last_threads == 1
    out2 = model.forward(x, n_threads=2)
    if batch == BATCH:
        assert model.last_threads == 2
    assert np.array_equal(out1, out2)
    assert np.array_equal(out2, model.forward(x, n_threads=2))  # run to run

    for loss in ("mse", "bce"):
        l1, _ = model.loss_and_grad(x, y, loss=loss, n_threads=1)
        g1 = model.flat_grad.copy()
        l2, _ = model.loss_and_grad(x, y, loss=loss, n_threads=2)
        if batch == BATCH:
            assert model.last_threads == 2
        g2 = model.flat_grad.copy()
        assert l1 == l2, loss
        assert np.array_equal(g1, g2), loss
        assert model.loss(x, y, loss=loss, n_threads=2) == l1
        # the default thread count (None) gives the same bits as well
        l3, _ = model.loss_and_grad(x, y, loss=loss)
        assert l3 == l1 and np.array_equal(model.flat_grad, g1)


@pytest.mark.parametrize("n_threads,first,second", [(1, 50, 50), (2, 5, 5)])
def test_fit_in_pieces_equals_fit_in_one_go(n_threads, first, second):
    """fit(50) then fit(50) == fit(100), bitwise, with a warm-up/cosine schedule so the step
    counter's continuation matters, and different log_every on the two sides (a short
    version with 2 threads)."""
    total = first + second

    def make():
        model = sf.Transformer(n_positions=8, d_model=16, n_heads=2, n_layers=2, dtype="float32", seed=3)
        opt = sf.AdamW(lr=3e-3, weight_decay=0.1, schedule="cosine", warmup_steps=10, total_steps=100,
                       min_lr=1e-4)
        return model, sf.Trainer(model, sf.targets.Parity(8), optimizer=opt, batch_size=64, seed=9,
                                 n_threads=n_threads)

    whole_model, whole = make()
    h_whole = whole.fit(total, log_every=1, progress=False)
    split_model, split = make()
    split.fit(first, log_every=1, progress=False)
    h_split = split.fit(second, log_every=1, progress=False)
    assert whole.step_count == split.step_count == total
    assert whole.optimizer.step_count == split.optimizer.step_count == total
    assert np.array_equal(whole_model.flat, split_model.flat)
    for column in ("step", "loss", "accuracy", "grad_norm", "lr"):
        assert np.array_equal(h_whole[column].to_numpy(), h_split[column].to_numpy()), column

    # coarser logging changes only the history, not the trajectory
    if n_threads != 1:
        return
    coarse_model, coarse = make()
    coarse.fit(30, log_every=7, progress=False)
    h_coarse = coarse.fit(70, log_every=10, progress=False)
    assert np.array_equal(coarse_model.flat, whole_model.flat)
    # the coarse rows are means of the per-step losses over their windows
    steps = h_coarse["step"].to_numpy()
    per_step = h_whole["loss"].to_numpy()
    bounds = np.concatenate([[0], steps])
    for lo, hi, value in zip(bounds[:-1], bounds[1:], h_coarse["loss"].to_numpy()):
        assert value == pytest.approx(per_step[lo:hi].mean(), rel=1e-12)


def test_trainer_step_matches_fit():
    """The Python-side Trainer.step on sample_batch(k) reproduces the C loop's fit bitwise."""

    def make():
        model = sf.Transformer(n_positions=6, d_model=16, n_heads=2, n_layers=1, dtype="float64", seed=4)
        return model, sf.Trainer(model, sf.targets.Parity(6), optimizer=sf.AdamW(lr=1e-3, weight_decay=0.1),
                                 batch_size=32, seed=2, n_threads=1)

    a_model, a = make()
    h = a.fit(10, log_every=1, progress=False)
    b_model, b = make()
    losses = [b.step(*b.sample_batch(k)) for k in range(10)]
    assert np.array_equal(a_model.flat, b_model.flat)
    assert np.array_equal(h["loss"].to_numpy(), losses)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_rows_output_does_not_depend_on_the_batch_around_it(random_model, dtype):
    """Partial GEMM tiles run the same FMA sequence as full ones, layer 0's distinct rows give the
    rows the full GEMM would, and every other op is per row or per sequence: so chunked truth
    tables are bitwise independent of the chunk size."""
    model = random_model(seed=4, scale=0.3, n_positions=9, d_model=48, n_heads=2, n_layers=2, dtype=dtype)
    x = np.random.default_rng(1).integers(0, 2, size=(200, 9), dtype=np.uint8)
    whole = model.forward(x)
    for chunk in (1, 2, 3, 7, 64):
        parts = np.concatenate([model.forward(x[i:i + chunk]) for i in range(0, len(x), chunk)])
        assert np.array_equal(parts, whole), chunk
