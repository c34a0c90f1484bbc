"""GEMM throughput of `_native.kernel_gemm` on the paper default's shapes, optionally against
another build of the engine loaded into the same process (old and new calls interleaved, so a
busy neighbour on a shared machine slows both alike).

    python benchmarks/bench_gemm.py                          # this build
    python benchmarks/bench_gemm.py --old /tmp/old/_engine.cpython-311-x86_64-linux-gnu.so

Shapes (M, N, K) of a d=128, n=20, B=1024 model: the forward's 192-row chunk products
(layer_tail_forward, A read from a 20480-row array that is not in cache), tall in-projection /
input-gradient products, weight gradients (A = dY^T read transposed) and Q K^T-style B^T.
Prints GFLOP/s (median and best of --reps) and, with --old, the median ratio new/old.
"""

import argparse
import importlib.machinery
import importlib.util
import time

import numpy as np

import sensiformer  # noqa: F401  (the package the engines belong to)
from sensiformer import _native

SHAPES = [  # name, M, N, K, transpose_a, transpose_b, 192-row chunks
    ("chunks 192 x 128 x 128", 20480, 128, 128, 0, 0, True),
    ("chunks 192 x 512 x 128", 20480, 512, 128, 0, 0, True),
    ("(20480, 384, 128)", 20480, 384, 128, 0, 0, False),
    ("(20480, 128, 128)", 20480, 128, 128, 0, 0, False),
    ("(20480, 256, 128)", 20480, 256, 128, 0, 0, False),
    ("(1024, 128, 128)", 1024, 128, 128, 0, 0, False),
    ("dX (20480, 128, 384)", 20480, 128, 384, 0, 0, False),
    ("dW (128, 128, 20480) A^T", 128, 128, 20480, 1, 0, False),
    ("dW (384, 128, 20480) A^T", 384, 128, 20480, 1, 0, False),
    ("B^T (20480, 128, 128)", 20480, 128, 128, 0, 1, False),
    ("attention (20, 64, 20)", 20, 64, 20, 0, 0, False),
]


def load_engine(path):
    loader = importlib.machinery.ExtensionFileLoader("sensiformer._engine", path)
    spec = importlib.util.spec_from_file_location("sensiformer._engine", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def gemm_of(engine):
    """engine.kernel_gemm as one positional function: builds from before the keyword boundary take positional
    arguments, later ones keywords only."""
    def by_keyword(path, a, b, c, bias, accumulate, transpose_a, transpose_b, n_threads):
        engine.kernel_gemm(path=path, a=a, b=b, c=c, bias=bias, accumulate=accumulate, transpose_a=transpose_a,
                           transpose_b=transpose_b, n_threads=n_threads)

    one = np.ones((1, 1), np.float32)
    try:
        by_keyword("baseline", one, one, one.copy(), None, False, False, False, 1)
        return by_keyword
    except TypeError:
        return engine.kernel_gemm


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", help="another build's _engine .so to compare against")
    ap.add_argument("--paths", default="x86-64-v3,x86-64-v4")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    engines = {"new": gemm_of(_native)}
    if args.old:
        engines = {"old": gemm_of(load_engine(args.old)), "new": engines["new"]}
    paths = args.paths.split(",")  # kernel_gemm refuses a path this CPU cannot run
    rng = np.random.default_rng(0)
    for name, M, N, K, ta, tb, chunked in SHAPES:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        c = np.zeros((M, N), np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        calls = [(a[r:r + 192], c[r:r + 192]) for r in range(0, M, 192)] if chunked else [(a, c)]
        repeat = max(1, int(5e7 / (2 * M * N * K)))
        for path in paths:
            for nt in (int(t) for t in args.threads.split(",")):
                times = {k: [] for k in engines}
                for r in range(args.reps):
                    order = list(engines.items())
                    for key, eng in order if r % 2 == 0 else order[::-1]:
                        eng(path, a if not chunked else calls[0][0], b, c if not chunked else calls[0][1],
                                        bias, False, bool(ta), bool(tb), nt)
                        t0 = time.perf_counter()
                        for _ in range(repeat):
                            for av, cv in calls:
                                eng(path, av, b, cv, bias, False, bool(ta), bool(tb), nt)
                        times[key].append((time.perf_counter() - t0) / repeat)
                gf = {k: 2 * M * N * K / np.median(v) / 1e9 for k, v in times.items()}
                best = {k: 2 * M * N * K / min(v) / 1e9 for k, v in times.items()}
                line = f"{path:10s} {nt}t  {name:26s}" + "".join(
                    f"  {k} {gf[k]:6.1f} (best {best[k]:6.1f})" for k in engines)
                if args.old:
                    line += f"  new/old {gf['new'] / gf['old']:.3f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
