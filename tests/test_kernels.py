"""The GEMM of every CPU path this machine can run against a float64 NumPy reference: shapes
with partial tiles at both edges (every row count of the 6-row 256-bit and the 14-row 512-bit tile,
columns cut by masks), K beyond one cache block, transposed A and B, bias, accumulation, B blocks
too wide to pack at once, and bitwise agreement between 1 and 2 threads. x86-64-v3 and x86-64-v4
instantiate one micro-kernel source at 256 and 512 bits and give the same bits; the portable
baseline path is their reference twin."""

import numpy as np
import pytest

import sensiformer as sf
from sensiformer import _native

PATHS = sf.show_config(print_out=False)["cpu_paths"]
VECTOR_PATHS = [p for p in PATHS if p != "baseline"]
# (20, 1100, 300): a packed B block over 1 MiB, so B is packed one panel at a time;
# (30, 40, 4200): a weight-gradient shape, K split in two fixed halves
SHAPES = [(1, 1, 1), (5, 3, 7), (6, 16, 1), (7, 17, 33), (13, 40, 300), (14, 32, 9), (15, 33, 20), (28, 64, 17),
          (64, 128, 128), (130, 96, 520), (2, 2, 600), (300, 5, 64), (20, 1100, 300), (30, 40, 4200)]


def test_the_default_path_and_the_baseline_are_runnable():
    assert sf.show_config(print_out=False)["cpu_path"] in PATHS
    assert "baseline" in PATHS


def gemm(path, a, b, bias=None, c=None, transpose_a=False, transpose_b=False, n_threads=1):
    """c (+)= op(a) op(b) (+ bias); transpose_a: a is (K, M); transpose_b: b is (N, K)."""
    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    out = np.zeros((m, n), a.dtype) if c is None else c.copy()
    _native.kernel_gemm(path=path, a=np.ascontiguousarray(a), b=np.ascontiguousarray(b), c=out, bias=bias,
                        accumulate=c is not None, transpose_a=transpose_a, transpose_b=transpose_b, n_threads=n_threads)
    return out


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gemm_matches_numpy(path, dtype, transpose_a, transpose_b, M, N, K):
    rng = np.random.default_rng(M * 1000003 + N * 1009 + K)
    a = rng.normal(size=(K, M) if transpose_a else (M, K)).astype(dtype)
    b = rng.normal(size=(K, N)).astype(dtype)
    bias = rng.normal(size=N).astype(dtype)
    c0 = rng.normal(size=(M, N)).astype(dtype)
    a64 = (a.T if transpose_a else a).astype(np.float64)
    exact = c0.astype(np.float64) + a64 @ b.astype(np.float64) + bias
    scale = np.abs(c0) + np.abs(a64) @ np.abs(b.astype(np.float64)) + np.abs(bias)
    eps = np.finfo(dtype).eps
    # b is (K, N) either way; transpose_b hands the kernel b.T's storage
    got = gemm(path, a, b.T if transpose_b else b, bias=bias, c=c0, transpose_a=transpose_a, transpose_b=transpose_b)
    assert got.dtype == dtype
    # a rounding error bound for a sum of K + 2 terms; a wrong index errs by O(scale)
    assert np.all(np.abs(got - exact) <= (K + 2) * eps * scale), np.max(np.abs(got - exact) / scale)
    plain = gemm(path, a, b.T if transpose_b else b, transpose_a=transpose_a, transpose_b=transpose_b)
    assert np.all(np.abs(plain - a64 @ b) <= (K + 1) * eps * (np.abs(a64) @ np.abs(b)))


@pytest.mark.parametrize("path", PATHS)
def test_gemm_is_bitwise_identical_for_1_and_2_threads(path):
    rng = np.random.default_rng(1)
    # split by rows, by columns, and along K
    for M, N, K in [(700, 128, 128), (128, 128, 3000), (20, 500, 200), (128, 128, 5000)]:
        a = rng.normal(size=(M, K)).astype(np.float32)
        b = rng.normal(size=(K, N)).astype(np.float32)
        assert np.array_equal(gemm(path, a, b, n_threads=1), gemm(path, a, b, n_threads=2))


@pytest.mark.parametrize("path", PATHS)
def test_transposed_operands_change_no_bits(path):
    """Packing moves data only: op(a) op(b) from transposed storage equals the plain product."""
    rng = np.random.default_rng(3)
    for M, N, K in [(6, 16, 5), (7, 40, 300), (130, 96, 520), (20, 1100, 300), (1, 33, 17)]:
        a = rng.normal(size=(M, K)).astype(np.float32)
        b = rng.normal(size=(K, N)).astype(np.float32)
        plain = gemm(path, a, b)
        for threads in (1, 2):
            assert np.array_equal(gemm(path, a.T, b.T, transpose_a=True, transpose_b=True, n_threads=threads), plain)
            assert np.array_equal(gemm(path, a, b.T, transpose_b=True, n_threads=threads), plain)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_paths_give_the_same_bits(dtype):
    """Same arithmetic per element at 256 and 512 bits: every row count 1..14 of an edge tile, masked columns,
    bias, accumulation, K blocks, and the K split of weight gradients."""
    if len(VECTOR_PATHS) < 2:
        pytest.skip(f"this CPU runs {VECTOR_PATHS or 'no vector path'}: nothing to compare")
    rng = np.random.default_rng(4)
    for M, N, K in [(m, n, 37) for m in range(1, 15) for n in (1, 15, 17, 31, 32, 33)] + [(300, 96, 520), (40, 40, 5000)]:
        a, b = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
        bias, c = rng.normal(size=N).astype(dtype), rng.normal(size=(M, N)).astype(dtype)
        results = [gemm(p, a, b, bias=bias, c=c) for p in VECTOR_PATHS]
        assert all(np.array_equal(r, results[0]) for r in results[1:]), (M, N, K)


def test_paths_agree_to_rounding():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(97, 301)), rng.normal(size=(301, 45))
    results = [gemm(p, a, b) for p in PATHS]
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", ["avx9000", "", "X86-64-V3"])
def test_unknown_path_is_refused(bad):
    with pytest.raises(ValueError, match="CPU path"):
        gemm(bad, np.ones((2, 2)), np.ones((2, 2)))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="shapes"):
        gemm("baseline", np.ones((2, 3)), np.ones((2, 2)), c=np.zeros((2, 2)))
    with pytest.raises(TypeError, match="b must have dtype"):
        gemm("baseline", np.ones((2, 2)), np.ones((2, 2), np.float32))
