"""Analysis of the functions models compute: truth tables in chunks, exact and Monte-Carlo
sensitivity with its details, and a trained PARITY model."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import analysis as A
from sensiformer import targets as T


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_truth_table_matches_forward(random_model, dtype):
    n = 9
    model = random_model(seed=1, n_positions=n, d_model=16, dtype=dtype)
    expected = model.forward(T.all_inputs(n)).astype(np.float64)
    for chunk_size in (None, 7, 64, 2**n):  # bounded blocks of 2^k inputs; same rows, same outputs
        np.testing.assert_array_equal(A.truth_table(model, n, chunk_size=chunk_size), expected)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(A.truth_table(model, n, chunk_size=1), expected, rtol=tol, atol=tol)


def test_truth_table_of_a_shorter_input_and_with_a_progress_bar(random_model, capsys):
    model = random_model(seed=2, n_positions=10, d_model=16)
    x = T.all_inputs(6)
    table = A.truth_table(model, 6, chunk_size=16, progress=True)
    np.testing.assert_array_equal(table, model.forward(x))
    np.testing.assert_array_equal(A.truth_table(model, 6, progress=False, n_threads=1), table)


def test_truth_table_of_targets_and_callables():
    np.testing.assert_array_equal(A.truth_table(T.Majority(7), 7), T.Majority(7)(T.all_inputs(7)))
    table = A.truth_table(lambda x: x[:, 0] * 0.25 + x[:, -1], 5, chunk_size=3)
    x = T.all_inputs(5)
    np.testing.assert_array_equal(table, x[:, 0] * 0.25 + x[:, -1])


def test_exact_model_sensitivity_details(random_model):
    n = 8
    model = random_model(seed=3, n_positions=n, d_model=16)
    table = model.forward(T.all_inputs(n))
    boolean = A.model_sensitivity(model, n)  # threshold 0.5: the Boolean function computed
    assert isinstance(boolean, sf.Estimate) and boolean.exact
    assert (boolean.stderr, boolean.n_samples, boolean.threshold, boolean.scale) == (0.0, 2**n, 0.5, "01")
    binary = (table > 0.5).astype(float)
    np.testing.assert_array_equal(boolean.table, binary)
    assert boolean.value == A.average_sensitivity(binary)
    np.testing.assert_array_equal(boolean.profile, A.sensitivity_profile(binary))
    np.testing.assert_array_equal(boolean.influences, A.influences(binary))
    assert boolean.profile.sum() == 2**n
    assert boolean.max_sensitivity == A.max_sensitivity(binary)

    raw = A.model_sensitivity(model, n, threshold=None)
    assert raw.value == pytest.approx(A.average_sensitivity(table), rel=1e-12)
    assert raw.profile is None and raw.max_sensitivity is None  # real outputs have no profile
    pm1 = A.model_sensitivity(model, n, threshold=None, scale="pm1")
    assert pm1.value == pytest.approx(raw.value / 4, rel=1e-12)
    assert A.model_sensitivity(model, n, threshold=0.0, scale="pm1").scale == "01"  # binarised


def test_model_sensitivity_of_targets():
    result = A.model_sensitivity(T.Parity(10), 10)
    assert result.value == 10 and result.max_sensitivity == 10
    assert A.model_sensitivity(T.Mean(6), 6, threshold=None).value == pytest.approx(1 / 6)


def test_monte_carlo_batches_each_input_with_its_flips(random_model):
    """The model sees, per call, whole groups of an input followed by its n one-bit flips."""
    n = 6
    model = random_model(seed=4, n_positions=n, d_model=16)
    calls = []

    def spy(x):
        calls.append(x.copy())
        return model.forward(x)

    A.estimate_sensitivity(spy, n, samples=10, chunk_size=3 * (n + 1))
    assert [len(c) for c in calls] == [21, 21, 21, 7]
    for batch in calls:
        groups = batch.reshape(-1, n + 1, n)
        np.testing.assert_array_equal(groups[:, 1:, :] ^ groups[:, :1, :], np.broadcast_to(np.eye(n, dtype=np.uint8),
                                                                                             (len(groups), n, n)))


@pytest.mark.slow
def test_trained_parity_model_has_sensitivity_n():
    n = 8
    model = sf.Transformer(n, d_model=64, seed=0)
    # n_threads=1: the same bits as any thread count, and no team to stall on a shared, busy runner
    # a cosine-annealed lr: a constant 1e-3 leaves Adam oscillating, so whether the final step lands
    # below 1e-3 depended on the rounding of the trajectory
    trainer = sf.Trainer(model, sf.targets.Parity(n), batch_size=256, n_threads=1,
                         optimizer=sf.AdamW(lr=1e-3, weight_decay=0.1, schedule="cosine", total_steps=1500))
    trainer.fit(1500, progress=False)
    assert trainer.evaluate()["loss"] < 1e-3
    boolean = A.model_sensitivity(model, n, threshold=0.5)
    assert boolean.value == n
    np.testing.assert_array_equal(boolean.profile, np.eye(n + 1, dtype=np.int64)[n] * 2**n)  # every input: all n
    raw = A.model_sensitivity(model, n, threshold=None)
    assert round(raw.value) == n and raw.value == pytest.approx(n, abs=0.25)
    mc = A.model_sensitivity(model, n, threshold=None, exact=False, samples=400, seed=1)
    assert abs(mc.value - raw.value) < 4 * mc.stderr + 1e-12
