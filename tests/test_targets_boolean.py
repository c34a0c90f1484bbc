"""Boolean targets beyond the paper's four: sparse parity, juntas, Fourier-defined and random
low-degree functions, truth tables, Python callables; label noise; output scales."""

import math

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import analysis as A
from sensiformer import targets as T

X6 = T.all_inputs(6)


def targets_on_6_bits():
    return [T.Parity(6), T.Majority(6), T.First(6), T.Mean(6), T.RandomFunction(6, seed=1), T.SparseParity(6, [4, 1]),
            T.Junta(6, k=3, seed=2), T.Junta(6, bits=[5, 0], table=[0.0, 0.25, 0.5, 1.0]),
            T.FourierFunction({(): 0.25, (0,): 0.5, (1, 2): -0.25}, n=6),
            T.FourierFunction({(0,): 0.5, (1, 2): -0.25}, n=6, output="sign"),
            T.RandomDegree(6, 2, seed=3), T.RandomDegree(6, 3, seed=4, output="real"),
            T.TruthTable(np.random.default_rng(5).normal(size=64)), T.Callable(lambda x: x[:, 2] & x[:, 3], 6)]


@pytest.mark.parametrize("target", targets_on_6_bits(), ids=repr)
def test_the_training_stream_uses_the_same_function(target):
    """sf_sample_batch (the C training loop's data) labels its inputs with target(x)."""
    trainer = sf.Trainer(sf.Transformer(6, d_model=16), target, batch_size=64, seed=9)
    for step in (0, 5):
        x, y = trainer.sample_batch(step)
        np.testing.assert_array_equal(y, target(x))
    np.testing.assert_allclose(target.truth_table(), target(X6), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(target(X6, scale="pm1"), T.to_pm1(target(X6)))


@pytest.mark.parametrize("target", [T.SparseParity(6, [0, 3]), T.Junta(6, k=2, seed=1), T.RandomDegree(6, 2, seed=2),
                                    T.Callable(lambda x: x[:, 0] | x[:, 5], 6)], ids=repr)
def test_new_kinds_train_in_the_c_loop(target):
    trainer = sf.Trainer(sf.Transformer(6, d_model=16, seed=0), target, optimizer=sf.AdamW(lr=3e-3), batch_size=64,
                         n_threads=1)  # tiny steps: a thread team would only add contention on shared runners
    history = trainer.fit(60, log_every=30, progress=False)
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_sparse_parity():
    target = T.SparseParity(20, [17, 3, 9])
    assert target.bits.tolist() == [3, 9, 17] and target == T.SparseParity(20, [9, 17, 3])
    x = np.random.default_rng(0).integers(0, 2, (100, 20))
    np.testing.assert_array_equal(target(x), (x[:, 3] + x[:, 9] + x[:, 17]) % 2)
    table = target.truth_table()
    assert A.average_sensitivity(table) == 3 and A.degree(table) == 3
    coef = A.fourier(table)
    assert coef[2 ** (19 - 3) + 2 ** (19 - 9) + 2 ** (19 - 17)] == 1.0  # 1 - 2 parity_S is chi_S itself
    assert np.sum(coef**2) == 1.0 and np.count_nonzero(coef) == 1
    assert T.SparseParity(500, [0, 499])(np.eye(2, 500, dtype=int)).tolist() == [1.0, 0.0]


def test_junta_depends_only_on_its_bits():
    target = T.Junta(12, k=4, seed=3)
    assert target.k == 4 and len(set(target.bits)) == 4 and target.boolean
    inf = A.influences(target.truth_table())
    assert np.all(inf[np.setdiff1d(np.arange(12), target.bits)] == 0)
    explicit = T.Junta(3, bits=[2, 0], table=[0.0, 1.0, 0.0, 0.0])  # value 1 iff x_3 = 0 and x_1 = 1
    np.testing.assert_array_equal(explicit(T.all_inputs(3)), [0, 0, 0, 0, 1, 0, 1, 0])
    assert not T.Junta(3, bits=[1], table=[0.2, 0.9]).boolean
    assert T.Junta(12, k=4, seed=3) == target and T.Junta(12, k=4, seed=4) != target


def test_fourier_function_round_trips_through_analysis():
    rng = np.random.default_rng(6)
    dense = np.where(rng.random(2**7) < 0.2, rng.normal(size=2**7), 0.0)
    target = T.FourierFunction(dense)
    assert target.n == 7
    np.testing.assert_allclose(A.fourier(target.truth_table()), dense, atol=1e-14)
    np.testing.assert_allclose(A.fourier(target.truth_table(scale="pm1"), scale="pm1"), dense, atol=1e-14)
    np.testing.assert_array_equal(target.dense_coefficients(), dense)
    mapping = T.FourierFunction({(0, 2): 1.0}, n=3)  # g = chi_{x1, x3}: PARITY of x1, x3 on the +-1 scale
    np.testing.assert_array_equal(mapping(T.all_inputs(3)), T.SparseParity(3, [0, 2])(T.all_inputs(3)))
    sign = T.FourierFunction({(): 0.1, (0,): 1.0}, n=2, output="sign")  # sign(0.1 + chi_1) = chi_1
    np.testing.assert_array_equal(sign.truth_table(), [0.0, 0.0, 1.0, 1.0])
    assert sign.boolean and not mapping.boolean and mapping.degree == 2


def test_a_sign_fourier_functions_table_is_its_training_labels_where_rounding_decides():
    """g = chi_1 + chi_2 + 1e-300 chi_12 is -1e-300 or +1e-300 where chi_1 and chi_2 cancel: the transform's
    sum rounds it to 0 there, the training stream's term-by-term sum keeps its sign (found by the fuzzer)."""
    target = T.FourierFunction(np.array([0.0, 1.0, 1.0, 1e-300]), output="sign")
    np.testing.assert_array_equal(target.truth_table(), target(T.all_inputs(2)))
    rng = np.random.default_rng(3)  # coefficients that cancel at many inputs, with rounding-level remainders
    dense = rng.choice([0.0, 1.0, -1.0, 1e-17, -3e-17], size=2**8)
    target = T.FourierFunction(dense, output="sign")
    np.testing.assert_array_equal(target.truth_table(), target(T.all_inputs(8)))


def test_random_degree():
    real = T.RandomDegree(10, 3, seed=1, output="real")
    assert real.coefficients.size == sum(math.comb(10, j) for j in range(4))
    assert A.degree(real.truth_table(), tol=1e-9) == 3
    assert A.degree_spectrum(real.truth_table())[4:].max() < 1e-25
    boolean = T.RandomDegree(10, 3, seed=1)
    np.testing.assert_array_equal(boolean.truth_table(), (real.truth_table() > 0.5).astype(float))
    assert T.RandomDegree(10, 3, seed=1) == boolean and T.RandomDegree(10, 3, seed=2) != boolean
    big = T.RandomDegree(200, 1, seed=0)  # too many inputs to tabulate; the C loop still evaluates it
    x = np.random.default_rng(0).integers(0, 2, (4, 200))
    g = big.coefficients[0] + (1 - 2 * x) @ big.coefficients[1:]
    np.testing.assert_array_equal(big(x), (g < 0).astype(float))


def test_truth_table_target():
    table = np.random.default_rng(7).integers(0, 2, 32)
    target = T.TruthTable(table)
    assert target.n == 5 and target.boolean and target.engine_spec()[0] == 4
    np.testing.assert_array_equal(target(T.all_inputs(5)), table)
    table[0] = 1 - table[0]  # the target keeps its own copy
    assert target.table[0] != table[0]
    assert not T.TruthTable([0.0, 0.3]).boolean


def test_callable_is_tabulated_once_for_the_c_loop():
    calls = []

    def fn(x):
        calls.append(len(x))
        return x.sum(axis=1) % 3 == 0

    target = T.Callable(fn, 8)
    kind, n, table = target.engine_spec()
    assert (kind, n) == (4, 8) and table.shape == (256,)
    target.engine_spec()
    assert calls == [256]  # cached
    np.testing.assert_array_equal(table, fn(T.all_inputs(8)))
    assert target.boolean


def test_callable_beyond_24_bits_cannot_drive_the_c_loop():
    target = T.Callable(lambda x: x[:, 0], 30)
    np.testing.assert_array_equal(target(np.eye(2, 30, dtype=int)), [1.0, 0.0])  # calling it works
    with pytest.raises(NotImplementedError, match=r"tabulated for n <= 24.*data=\(x, target\(x\)\)"):
        target.engine_spec()
    with pytest.raises(NotImplementedError, match="n <= 24"):
        sf.Trainer(sf.Transformer(30, d_model=16), target)
    assert target.boolean is None  # not tabulated, so unknown
    assert A.estimate_sensitivity(target, 30, samples=8).value == 1.0  # Monte-Carlo still works


# ---- label noise ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [T.Parity(10, noise=0.2), T.SparseParity(10, [1, 2], noise=0.2),
                                    T.RandomFunction(10, noise=0.2), T.Mean(10, noise=0.2)], ids=repr)
def test_noise_flips_training_labels_reproducibly(target):
    trainer = sf.Trainer(sf.Transformer(10, d_model=16), target, batch_size=4096, seed=3)
    x, y = trainer.sample_batch(7)
    clean = target(x)
    assert np.all((y == clean) | (y == 1 - clean))
    flipped = (y != clean)[clean != 0.5]  # MEAN's 0.5 is its own flip
    assert abs(flipped.mean() - 0.2) < 5 * math.sqrt(0.2 * 0.8 / flipped.size)
    np.testing.assert_array_equal(y, target.noisy(x, seed=3, step=7))
    np.testing.assert_array_equal(trainer.sample_batch(7)[1], y)  # the same (seed, step) -> the same flips
    noiseless = type(target).__new__(type(target))
    noiseless.__dict__.update(target.__dict__, noise=0.0)
    x2, y2 = sf.Trainer(sf.Transformer(10, d_model=16), noiseless, batch_size=4096, seed=3).sample_batch(7)
    np.testing.assert_array_equal(x2, x)  # noise never touches the inputs
    np.testing.assert_array_equal(y2, clean)


def test_noise_extremes_and_calls_stay_noiseless():
    x = np.random.default_rng(0).integers(0, 2, (50, 6))
    np.testing.assert_array_equal(T.First(6, noise=1.0).noisy(x, seed=1), 1 - x[:, 0])
    np.testing.assert_array_equal(T.First(6, noise=0.0).noisy(x, seed=1), x[:, 0])
    np.testing.assert_array_equal(T.First(6, noise=0.5)(x), x[:, 0])
    assert T.First(6, noise=0.5) != T.First(6) and repr(T.First(6, noise=0.5)) == "First(n=6, noise=0.5)"
    assert T.Parity(6).engine_spec() == (0, 6, None)  # unchanged when there are no options


def test_the_c_loop_learns_from_the_noisy_labels():
    """With p = 1 every label is flipped: the model learns NOT x_1 while target(x) stays x_1."""
    target = T.First(6, noise=1.0)
    trainer = sf.Trainer(sf.Transformer(6, d_model=16, seed=0), target, optimizer=sf.AdamW(lr=3e-3), batch_size=64,
                         n_threads=1)
    trainer.fit(150, progress=False)
    assert trainer.evaluate()["accuracy"] < 0.1  # evaluated against the clean x_1


# ---- scales and bad input --------------------------------------------------------------------------

def test_scale_conversions():
    y = np.array([0.0, 1.0, 0.25])
    np.testing.assert_array_equal(T.to_pm1(y), [1.0, -1.0, 0.5])
    np.testing.assert_array_equal(T.to_01(T.to_pm1(y)), y)
    np.testing.assert_array_equal(T.binarize([0.2, 0.5, 0.7]), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(T.binarize([-0.1, 0.1], threshold=0.0), [0.0, 1.0])
    assert A.to_pm1 is T.to_pm1 and A.binarize is T.binarize


@pytest.mark.parametrize("make, error, message", [
    (lambda: T.Parity(6, noise=1.5), ValueError, r"noise must be <= 1.0"),
    (lambda: T.Parity(6, noise=float("nan")), ValueError, r"noise must be finite"),
    (lambda: T.SparseParity(6, [6]), ValueError, r"bits must lie in \[0, 6\)"),
    (lambda: T.SparseParity(6, [1, 1]), ValueError, r"bits must be distinct"),
    (lambda: T.SparseParity(6, []), ValueError, r"bits must be a non-empty"),
    (lambda: T.SparseParity(6, [0.5]), TypeError, r"bits must hold integer positions"),
    (lambda: T.Junta(6), ValueError, r"exactly one of k .* and bits"),
    (lambda: T.Junta(6, k=2, bits=[0, 1]), ValueError, r"exactly one of k"),
    (lambda: T.Junta(6, k=7), ValueError, r"k must be <= 6"),
    (lambda: T.Junta(6, bits=[0, 1], table=[0.0, 1.0]), ValueError, r"table must have 2\*\*2 entries"),
    (lambda: T.FourierFunction({(0,): 1.0}), ValueError, r"n is required"),
    (lambda: T.FourierFunction({(0,): 1.0, (0, 0): 1.0}, n=3), ValueError, r"must be distinct"),
    (lambda: T.FourierFunction({(0, 1): 1.0, (1, 0): 2.0}, n=3), ValueError, r"appears twice"),
    (lambda: T.FourierFunction({(3,): 1.0}, n=3), ValueError, r"a set of positions must lie in \[0, 3\)"),
    (lambda: T.FourierFunction({(0,): float("nan")}, n=3), ValueError, r"coefficient of \[0\] must be finite"),
    (lambda: T.FourierFunction(np.zeros(8), n=4), ValueError, r"2\*\*3 entries but n=4"),
    (lambda: T.FourierFunction(np.zeros(8), output="tanh"), ValueError, r"output must be one of"),
    (lambda: T.RandomDegree(100, 5), ValueError, r"Fourier terms, more than"),
    (lambda: T.TruthTable([0.0, 1.0, 1.0]), ValueError, r"table must have 2\*\*n entries"),
    (lambda: T.TruthTable([0.0, np.nan]), ValueError, r"table must be finite"),
    (lambda: T.Callable("parity", 4), TypeError, r"fn must be callable"),
    (lambda: T.Parity(6)(X6, scale="pm"), ValueError, r"scale must be one of"),
    (lambda: T.Parity(6).noisy(X6, seed=-1), ValueError, r"seed must be >= 0"),
    (lambda: T.Parity(30).truth_table(), ValueError, r"n <= 26.*estimate_sensitivity"),
    (lambda: T.binarize([0.3], threshold=float("nan")), ValueError, r"threshold must be finite"),
])
def test_bad_target_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()
