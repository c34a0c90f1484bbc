"""This process's CPU path: it is the one asked for, and its GEMM matches NumPy (partial tiles at
both edges, K beyond one cache block, B too wide to pack at once, K split over threads, transposed
operands, bias, accumulation) and gives the same bits on 1 and 2 threads."""

import numpy as np
import pytest

from sensiformer import _native

from ._support import cpu_paths, current_path, forced_path

SHAPES = [(1, 1, 1), (5, 3, 7), (6, 16, 1), (7, 17, 33), (13, 40, 300), (130, 96, 520), (20, 1100, 300),
          (30, 40, 4200)]


def test_the_path_in_use_is_the_one_asked_for():
    path = current_path()
    assert path in cpu_paths(), f"the engine runs {path!r}, which is not among the runnable {cpu_paths()}"
    assert "baseline" in cpu_paths()
    asked = forced_path()
    assert asked is None or path == asked, f"SENSIFORMER_CPU_PATH={asked} but the engine runs {path!r}"


def gemm(a, b, *, c=None, bias=None, transpose_a=False, transpose_b=False, n_threads=1):
    """c (+)= op(a) op(b) (+ bias) on this process's path."""
    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    out = np.zeros((m, n), a.dtype) if c is None else c.copy()
    _native.kernel_gemm(path=current_path(), a=np.ascontiguousarray(a), b=np.ascontiguousarray(b), c=out, bias=bias,
                        accumulate=c is not None, transpose_a=transpose_a, transpose_b=transpose_b, n_threads=n_threads)
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_matches_numpy(errors, dtype):
    """Error relative to the rounding bound (K + 2) eps sum|terms| of each element (a wrong index
    errs by O(1) of it)."""
    eps = np.finfo(dtype).eps
    for M, N, K in SHAPES:
        rng = np.random.default_rng(M * 1000003 + N * 1009 + K)
        a, b = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
        bias, c0 = rng.normal(size=N).astype(dtype), rng.normal(size=(M, N)).astype(dtype)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        exact = c0 + a64 @ b64 + bias
        bound = (K + 2) * eps * (np.abs(c0) + np.abs(a64) @ np.abs(b64) + np.abs(bias))
        for ta in (False, True):
            for tb in (False, True):
                got = gemm(a.T if ta else a, b.T if tb else b, c=c0, bias=bias, transpose_a=ta, transpose_b=tb)
                assert got.dtype == dtype
                errors.check(f"{M}x{N}x{K} ta={ta} tb={tb} (error/bound)", np.max(np.abs(got - exact) / bound), 1.0)
        plain = gemm(a, b)
        errors.check(f"{M}x{N}x{K} plain (error/bound)",
                     np.max(np.abs(plain - a64 @ b64) / ((K + 1) * eps * (np.abs(a64) @ np.abs(b64)))), 1.0)


def test_gemm_is_bitwise_identical_for_1_and_2_threads(errors):
    rng = np.random.default_rng(1)
    for M, N, K in [(700, 128, 128), (20, 500, 200), (128, 128, 3000)]:  # split by rows, columns, along K
        a, b = rng.normal(size=(M, K)).astype(np.float32), rng.normal(size=(K, N)).astype(np.float32)
        errors.equal(f"{M}x{N}x{K}", gemm(a, b, n_threads=2), gemm(a, b, n_threads=1))
