"""Trainer: defaults, history, continuation, logging, callbacks, sampling, targets, data,
labels and losses, evaluation, divergence, optimizer binding and a quick learning check."""

import itertools

import numpy as np
import pandas as pd
import pytest

import sensiformer as sf
from sensiformer import targets

COLUMNS = ["step", "loss", "accuracy", "lr", "grad_norm", "time"]


pytestmark = pytest.mark.usefixtures("single_thread")



def small_model(n=6, **kwargs):
    kwargs.setdefault("d_model", 16)
    return sf.Transformer(n, **kwargs)


def indices_of(x):
    """Truth-table index of each row, x_1 the most significant bit."""
    x = np.asarray(x, dtype=np.int64)
    return (x << np.arange(x.shape[1] - 1, -1, -1)).sum(axis=1)


def all_inputs(n):
    return np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.int64).reshape(-1, n)


def zero_output(model):
    """Make forward return exactly 0 for every input."""
    p = model.parameters()
    p["linear_head.weight"][...] = 0
    p["linear_head.bias"][...] = 0
    return model


# ================================================================================================
# Defaults and history
# ================================================================================================

def test_trainer_defaults():
    m1, m2 = small_model(), small_model()
    t1 = sf.Trainer(m1, targets.Parity(6))
    t2 = sf.Trainer(m2, targets.Parity(6))
    for t in (t1, t2):
        assert type(t.optimizer) is sf.AdamW
        assert t.optimizer.hyper["lr"] == 3e-4
        assert t.optimizer.hyper["weight_decay"] == 0.1
        assert t.optimizer.hyper["decay_all"] is True
        assert (t.loss, t.labels, t.batch_size, t.seed, t.seq_len) == ("mse", "01", 1024, 0, 6)
        assert t.status == "ready" and t.step_count == 0
        assert isinstance(t.history, pd.DataFrame) and t.history.empty
        assert t.optimizer.step_count == 0
    assert t1.optimizer is not t2.optimizer  # a fresh optimizer per Trainer


def test_fit_returns_history_dataframe():
    m = small_model()
    t = sf.Trainer(m, targets.Parity(6), batch_size=32)
    h = t.fit(30, log_every=10, progress=False)
    assert isinstance(h, pd.DataFrame)
    assert list(h.columns) == COLUMNS
    assert h["step"].tolist() == [10, 20, 30]
    assert np.all(np.isfinite(h[["loss", "accuracy", "lr", "grad_norm", "time"]].to_numpy()))
    assert np.all((h["accuracy"] >= 0) & (h["accuracy"] <= 1))
    assert np.all(h["grad_norm"] > 0) and np.all(h["loss"] > 0)
    assert np.all(h["lr"] == 3e-4)
    assert np.all(np.diff(h["time"]) >= 0) and h["time"].iloc[0] >= 0
    assert t.status == "ok" and t.step_count == 30 and t.optimizer.step_count == 30
    pd.testing.assert_frame_equal(t.history, h)


def test_fit_again_continues():
    m = small_model()
    t = sf.Trainer(m, targets.Majority(6), batch_size=32)
    t.fit(250, log_every=100, progress=False)
    assert t.history["step"].tolist() == [100, 200, 250]
    h = t.fit(120, log_every=50, progress=False)
    # log points are multiples of log_every on the global step counter, plus the end of each fit
    assert h["step"].tolist() == [100, 200, 250, 300, 350, 370]
    assert len(h) == 6 and t.step_count == 370 and t.optimizer.step_count == 370
    h = t.fit(0, progress=False)
    assert len(h) == 6 and t.status == "ok"


def test_continued_fit_equals_one_long_fit():
    """Batch k depends only on (seed, k): 2 x 20 steps give the same parameters as 40 steps."""
    a, b = small_model(seed=1), small_model(seed=1)
    ta = sf.Trainer(a, targets.Parity(6), batch_size=16, seed=4)
    tb = sf.Trainer(b, targets.Parity(6), batch_size=16, seed=4)
    ta.fit(20, progress=False)
    ta.fit(20, log_every=7, progress=False)
    tb.fit(40, log_every=5, progress=False)
    np.testing.assert_array_equal(a.flat, b.flat)


@pytest.mark.parametrize("steps, log_every, expected", [
    (10, 1, list(range(1, 11))), (10, 3, [3, 6, 9, 10]), (10, 10, [10]), (10, 100, [10]), (1, 5, [1]),
])
def test_log_every_respected(steps, log_every, expected):
    t = sf.Trainer(small_model(), targets.First(6), batch_size=8)
    h = t.fit(steps, log_every=log_every, progress=False)
    assert h["step"].tolist() == expected


def test_log_rows_summarise_their_window():
    """With lr=0 the model never changes, so each row is the mean of its steps' batch losses."""
    m = small_model(dtype="float64")
    t = sf.Trainer(m, targets.Parity(6), optimizer=sf.SGD(lr=0.0), batch_size=16, seed=2)
    h = t.fit(6, log_every=3, progress=False)
    per_step = []
    for k in range(6):
        x, y = t.sample_batch(k)
        per_step.append(m.loss(x, y))
    np.testing.assert_allclose(h["loss"], [np.mean(per_step[:3]), np.mean(per_step[3:])], rtol=1e-12)


def test_lr_column_follows_the_schedule():
    opt = sf.AdamW(lr=1e-3, schedule="cosine", warmup_steps=10, total_steps=50, min_lr=1e-5)
    t = sf.Trainer(small_model(), targets.Parity(6), optimizer=opt, batch_size=8)
    h = t.fit(50, log_every=5, progress=False)
    np.testing.assert_allclose(h["lr"], [opt.lr_at(s - 1) for s in h["step"]], rtol=1e-12)
    assert h["lr"].iloc[0] == pytest.approx(5e-4) and h["lr"].iloc[-1] < 2e-5
    assert opt.lr_at(50) == pytest.approx(1e-5) and opt.lr_at(1000) == pytest.approx(1e-5)


# ================================================================================================
# Callbacks and progress
# ================================================================================================

def test_callbacks_function_and_subclass_forms():
    calls = []

    def record(trainer):
        calls.append(trainer.step_count)
        return {"probe": float(trainer.step_count) / 10}

    class Norm(sf.Callback):
        def __init__(self):
            super().__init__(every=4)
            self.seen = []

        def __call__(self, trainer):
            self.seen.append(trainer.step_count)
            return {"param_norm": float(np.linalg.norm(trainer.model.flat))}

    class Silent(sf.Callback):
        def __call__(self, trainer):
            return None

    norm = Norm()
    t = sf.Trainer(small_model(), targets.Parity(6), batch_size=8)
    h = t.fit(12, log_every=6, callbacks=[sf.Callback(record, every=3), norm, Silent(every=1)], progress=False)
    assert calls == [3, 6, 9, 12]
    assert norm.seen == [4, 8, 12]
    assert "probe" in h.columns and "param_norm" in h.columns
    rows = h.set_index("step")
    for s in (3, 6, 9, 12):
        assert rows.loc[s, "probe"] == s / 10
    for s in (4, 8, 12):
        assert np.isfinite(rows.loc[s, "param_norm"])
    assert h["step"].tolist() == [3, 4, 6, 8, 9, 12]  # log points plus every callback result
    # a plain function runs every log_every steps
    plain = []
    t.fit(10, log_every=5, callbacks=[lambda tr: plain.append(tr.step_count) or {"plain": 1.0}], progress=False)
    assert plain == [15, 20]  # on multiples of log_every; the end of a fit (22) is not one
    assert t.history["step"].tolist()[-3:] == [15, 20, 22]


def test_progress_false_prints_nothing(capsys):
    t = sf.Trainer(small_model(), targets.Parity(6), batch_size=8)
    t.fit(20, log_every=5, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


# ================================================================================================
# Sampling, subsets and targets
# ================================================================================================

def test_sample_batch_is_deterministic():
    t = sf.Trainer(small_model(), targets.Parity(6), batch_size=64, seed=3)
    x0, y0 = t.sample_batch(0)
    x0b, _ = t.sample_batch(0)
    x1, _ = t.sample_batch(1)
    assert x0.shape == (64, 6) and x0.dtype == np.uint8 and y0.shape == (64,)
    np.testing.assert_array_equal(x0, x0b)
    assert not np.array_equal(x0, x1)
    np.testing.assert_array_equal(y0, x0.sum(axis=1) % 2)
    other = sf.Trainer(small_model(), targets.Parity(6), batch_size=64, seed=4)
    assert not np.array_equal(other.sample_batch(0)[0], x0)
    t.fit(5, progress=False)
    np.testing.assert_array_equal(t.sample_batch()[0], t.sample_batch(5)[0])  # default: the next batch


def test_uniform_batches_look_uniform():
    t = sf.Trainer(small_model(n=10), targets.Parity(10), batch_size=4096, seed=0)
    x, _ = t.sample_batch(0)
    assert abs(x.mean() - 0.5) < 0.02
    assert np.all(np.abs(x.mean(axis=0) - 0.5) < 0.05)  # no position is biased


@pytest.mark.parametrize("n, m, seed", [(8, 10, 3), (6, 64, 0), (12, 5, 123)])
def test_restricted_subset_matches_official_sampler(n, m, seed):
    subset = sf.restricted_subset(n, m, seed=seed)
    expected = np.random.default_rng(seed).choice(2**n, m, replace=False)
    np.testing.assert_array_equal(subset, expected)
    assert subset.dtype == np.int64 and len(np.unique(subset)) == m


def test_train_subset_batches_only_draw_members():
    n = 8
    subset = sf.restricted_subset(n, 10, seed=3)
    target = targets.Majority(n)
    t = sf.Trainer(small_model(n=n), target, train_subset=subset, batch_size=64, seed=1)
    seen = set()
    for k in (0, 1, 2, 7, 1000, 123456):
        x, y = t.sample_batch(k)
        idx = indices_of(x)
        assert set(idx.tolist()) <= set(subset.tolist()), k
        np.testing.assert_array_equal(y, target(x))
        seen |= set(idx.tolist())
    assert seen == set(subset.tolist())  # with replacement from the whole set
    t.fit(3, progress=False)
    assert t.step_count == 3
    ev = t.evaluate()
    assert ev["n_inputs"] == 10  # evaluated on the training set


def test_train_subset_with_duplicates_and_any_integer_dtype():
    subset = np.array([5, 5, 5, 9], dtype=np.int32)
    t = sf.Trainer(small_model(), targets.Parity(6), train_subset=subset, batch_size=200)
    idx = indices_of(t.sample_batch(0)[0])
    assert set(idx.tolist()) <= {5, 9}
    assert 0.6 < np.mean(idx == 5) < 0.9  # duplicates weight the draw (3/4 expected)
    assert t.evaluate()["n_inputs"] == 2


@pytest.mark.parametrize("n, seed", [(1, 0), (4, 7), (9, 2)])
def test_random_function_table(n, seed):
    f = targets.RandomFunction(n, seed=seed)
    expected = np.random.default_rng(seed).choice(2, size=2**n)
    np.testing.assert_array_equal(f.table, expected)
    x = all_inputs(n)
    np.testing.assert_array_equal(f(x), expected[indices_of(x)])
    assert f.boolean


@pytest.mark.parametrize("n", range(1, 8))
def test_targets_match_definitions_on_all_inputs(n):
    x = all_inputs(n)
    ones = x.sum(axis=1)
    np.testing.assert_array_equal(targets.Parity(n)(x), ones % 2)
    np.testing.assert_array_equal(targets.Majority(n)(x), (ones > n - ones).astype(float))  # tie -> 0
    np.testing.assert_array_equal(targets.First(n)(x), x[:, 0])
    np.testing.assert_allclose(targets.Mean(n)(x), ones / n, rtol=0, atol=1e-15)
    for t in (targets.Parity(n), targets.Majority(n), targets.First(n), targets.Mean(n)):
        assert t(x).dtype == np.float64
    if n % 2 == 0:
        tie = np.array([[1] * (n // 2) + [0] * (n // 2)])
        assert targets.Majority(n)(tie)[0] == 0.0
    assert not targets.Mean(n).boolean and targets.Parity(n).boolean


def test_training_stream_labels_match_targets():
    for target in (targets.Parity(7), targets.Majority(6), targets.First(5), targets.Mean(6),
                   targets.RandomFunction(6, seed=1)):
        t = sf.Trainer(small_model(n=8), target, batch_size=128)
        x, y = t.sample_batch(3)
        np.testing.assert_array_equal(y, target(x))


def test_seq_len_longer_than_the_target():
    """A target defined by counting (PARITY) can be trained on longer inputs than its n."""
    t = sf.Trainer(small_model(n=10), targets.Parity(6), seq_len=9, batch_size=32)
    x, y = t.sample_batch(0)
    assert x.shape == (32, 9)
    np.testing.assert_array_equal(y, x.sum(axis=1) % 2)
    t.fit(2, progress=False)


# ================================================================================================
# Data, labels, losses, evaluation
# ================================================================================================

def test_training_on_a_fixed_dataset():
    rng = np.random.default_rng(0)
    x = all_inputs(7)[rng.choice(128, 40, replace=False)]  # distinct rows
    y = rng.uniform(size=40)
    m = small_model(n=8, dtype="float64")
    t = sf.Trainer(m, data=(x, y), batch_size=16)
    assert t.seq_len == 7 and t.target is None
    xb, yb = t.sample_batch(2)
    rows = {tuple(r): v for r, v in zip(x.tolist(), y.tolist())}
    for r, v in zip(xb.tolist(), yb.tolist()):
        assert rows[tuple(r)] == v  # every drawn row is a dataset row with its own label
    h = t.fit(5, log_every=5, progress=False)
    assert h["step"].tolist() == [5] and t.status == "ok"
    ev = t.evaluate()
    assert ev["n_inputs"] == 40
    assert ev["loss"] == pytest.approx(np.mean((m.forward(x) - y) ** 2), rel=1e-12)
    assert ev["loss"] == pytest.approx(m.loss(x, y), rel=1e-12)


@pytest.mark.parametrize("labels, constant_loss", [("01", 0.5), ("pm1", 1.0)])
def test_labels_pm1_regresses_on_2y_minus_1(labels, constant_loss):
    m = zero_output(small_model(dtype="float64"))
    t = sf.Trainer(m, targets.Parity(6), labels=labels, optimizer=sf.SGD(lr=0.0), batch_size=64)
    # a model that outputs 0: MSE is mean(y) on {0,1} labels and exactly 1 on {-1,+1} labels
    ev = t.evaluate()
    assert ev["loss"] == constant_loss and ev["n_inputs"] == 64
    x0, y0 = t.sample_batch(0)
    h = t.fit(1, log_every=1, progress=False)
    expected = m.loss(x0, 2 * y0 - 1 if labels == "pm1" else y0)
    assert h["loss"].iloc[0] == pytest.approx(expected, rel=1e-12)
    if labels == "pm1":
        assert h["loss"].iloc[0] == 1.0


@pytest.mark.parametrize("labels", ["01", "pm1"])
def test_first_step_loss_is_the_models_loss(labels):
    m = small_model()
    t = sf.Trainer(m, targets.Majority(6), labels=labels, optimizer=sf.SGD(lr=0.0), batch_size=64)
    x0, y0 = t.sample_batch(0)
    y_used = 2 * y0 - 1 if labels == "pm1" else y0
    h = t.fit(1, log_every=1, progress=False)
    assert h["loss"].iloc[0] == pytest.approx(m.loss(x0, y_used), rel=1e-6)
    out = m.forward(x0)
    threshold = 0.0 if labels == "pm1" else 0.5
    assert h["accuracy"].iloc[0] == pytest.approx(np.mean((out > threshold) == (y_used > threshold)))


def test_bce_loss():
    m = zero_output(small_model(dtype="float64"))
    t = sf.Trainer(m, targets.First(6), loss="bce", optimizer=sf.SGD(lr=0.0), batch_size=32)
    assert t.evaluate()["loss"] == pytest.approx(np.log(2), rel=1e-12)  # logit 0 -> log 2
    x0, y0 = t.sample_batch(0)
    h = t.fit(1, log_every=1, progress=False)
    assert h["loss"].iloc[0] == pytest.approx(m.loss(x0, y0, loss="bce"), rel=1e-12)
    # and it learns FIRST
    m2 = small_model(d_model=16)
    t2 = sf.Trainer(m2, targets.First(6), loss="bce", optimizer=sf.AdamW(lr=3e-3), batch_size=64)
    t2.fit(150, log_every=50, progress=False)
    ev = t2.evaluate()
    assert ev["accuracy"] == 1.0 and ev["loss"] < 0.3


def test_evaluate_exact_vs_sampled():
    m = small_model(seed=2)
    m.flat[:] = np.random.default_rng(1).normal(scale=0.3, size=m.flat.size)
    t = sf.Trainer(m, targets.Majority(6), batch_size=500)
    exact = t.evaluate()
    assert exact == t.evaluate(exact=True)
    assert exact["n_inputs"] == 64
    x = all_inputs(6)
    y = targets.Majority(6)(x)
    assert exact["loss"] == pytest.approx(np.mean((m.forward(x).astype(np.float64) - y) ** 2), rel=1e-12)
    sampled = t.evaluate(exact=False, batches=20)
    assert sampled["n_inputs"] == 20 * 500
    assert sampled["loss"] == pytest.approx(exact["loss"], rel=0.05)
    assert sampled["accuracy"] == pytest.approx(exact["accuracy"], abs=0.02)
    assert t.evaluate(exact=False, batches=3, batch_size=7)["n_inputs"] == 21
    assert t.evaluate(exact=False, batches=2, seed=5) == t.evaluate(exact=False, batches=2, seed=5)
    assert t.evaluate(exact=False, batches=2, seed=5) != t.evaluate(exact=False, batches=2, seed=6)


def test_trainer_step_on_a_given_batch():
    m = small_model(dtype="float64")
    t = sf.Trainer(m, targets.Parity(6), optimizer=sf.SGD(lr=0.1))
    x, y = t.sample_batch(0)
    before = m.flat.copy()
    expected = m.loss(x, y)
    assert t.step(x, y) == pytest.approx(expected, rel=1e-12)
    assert not np.array_equal(m.flat, before)
    assert t.optimizer.step_count == 1


def test_training_is_deterministic():
    runs = []
    for _ in range(2):
        m = small_model(seed=7)
        h = sf.Trainer(m, targets.Parity(6), batch_size=32, seed=9).fit(20, log_every=5, progress=False)
        runs.append((m.flat.copy(), h["loss"].to_numpy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


# ================================================================================================
# Divergence
# ================================================================================================

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make_optimizer", [
    pytest.param(lambda: sf.AdamW(lr=1e6), id="AdamW lr=1e6"),
    pytest.param(lambda: sf.SGD(lr=1e12), id="SGD lr=1e12"),
    pytest.param(lambda: sf.Adam(lr=1e30), id="Adam lr=1e30"),
])
def test_divergence_raises_and_keeps_finite_parameters(dtype, make_optimizer):
    m = small_model(dtype=dtype)
    opt = make_optimizer()
    t = sf.Trainer(m, targets.Parity(6), optimizer=opt, batch_size=64)
    with pytest.raises(sf.DivergenceError, match=r"not finite|became"):
        t.fit(500, log_every=1, progress=False)
    assert issubclass(sf.DivergenceError, FloatingPointError)
    assert t.status == "diverged"
    assert np.all(np.isfinite(m.flat)), "parameters must stay finite after divergence"
    assert 0 < t.step_count < 500
    assert opt.step_count == t.step_count
    h = t.history
    assert h["step"].tolist() == list(range(1, t.step_count + 1))  # every finished step is logged
    assert np.all(np.isfinite(h["loss"]))


def test_divergence_keeps_history_of_earlier_fits():
    m = small_model()
    t = sf.Trainer(m, targets.Parity(6), optimizer=sf.SGD(lr=1e-3), batch_size=32)
    t.fit(10, log_every=5, progress=False)
    m.flat[:] *= 1e30  # finite, but the next forward overflows
    blown_up = m.flat.copy()
    with pytest.raises(sf.DivergenceError):
        t.fit(100, log_every=10, progress=False)
    assert t.status == "diverged" and t.step_count == 10
    assert t.history["step"].tolist() == [5, 10]
    np.testing.assert_array_equal(m.flat, blown_up)  # the failing step did not update


def test_divergence_with_lr_beyond_float32_keeps_finite_parameters():
    m = small_model(dtype="float32")
    t = sf.Trainer(m, targets.Parity(6), optimizer=sf.SGD(lr=1e50), batch_size=64)
    try:
        t.fit(20, progress=False)
    except sf.DivergenceError:
        assert t.status == "diverged"
    assert np.all(np.isfinite(m.flat))


# ================================================================================================
# Optimizer binding
# ================================================================================================

def test_optimizer_bound_to_one_model_refuses_another():
    m1, m2 = small_model(), small_model()
    opt = sf.AdamW(lr=1e-3)
    t1 = sf.Trainer(m1, targets.Parity(6), optimizer=opt)
    assert opt.bind(m1) is opt  # binding again to the same model is fine
    with pytest.raises(ValueError, match=r"already bound to another model"):
        sf.Trainer(m2, targets.Parity(6), optimizer=opt)
    with pytest.raises(ValueError, match=r"already bound to another model"):
        opt.bind(m2)
    with pytest.raises(ValueError, match=r"already bound"):
        sf.Trainer(m2, targets.Parity(6), optimizer=t1.optimizer)
    # a second Trainer on the same model may share the optimizer (its state continues)
    t1.fit(3, progress=False)
    t2 = sf.Trainer(m1, targets.Majority(6), optimizer=opt)
    t2.fit(2, progress=False)
    assert opt.step_count == 5


# ================================================================================================
# Learning
# ================================================================================================

def test_learns_parity_6():
    m = sf.Transformer(6, d_model=32, seed=0)
    t = sf.Trainer(m, targets.Parity(6), optimizer=sf.AdamW(lr=3e-3, weight_decay=0.1), batch_size=128)
    for _ in range(15):
        t.fit(100, log_every=100, progress=False)
        ev = t.evaluate()
        if ev["loss"] < 1e-2:
            break
    assert ev["loss"] < 1e-2, f"PARITY(6) not learned in {t.step_count} steps: {ev}"
    assert ev["accuracy"] == 1.0 or ev["loss"] < 1e-2
    assert t.step_count <= 1500
