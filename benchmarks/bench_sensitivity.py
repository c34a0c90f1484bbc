"""Exact average sensitivity of a 2^22 truth table: sensiformer's C kernels vs NumPy (not a test).

The NumPy side is the best vectorised version of the textbook method (the official code's
dense O(4^n) matrix is out of reach at n = 22): a fast Walsh-Hadamard transform with one
reshape-and-stack per stage, then ``sum_S |S| f^(S)^2``. sensiformer runs

* ``average_sensitivity(table, method="fourier")``: the same Fourier route in C (blocked
  radix-8 transform and a per-degree reduction), and
* ``average_sensitivity(table)`` (method="flips", the default): direct flip counting, bit-packed
  for a 0/1 table.

Timings alternate NumPy / fourier / flips; reported are medians over repeats and the ratios
NumPy / sensiformer (> 1: sensiformer is faster). All three results are checked to agree.

    python benchmarks/bench_sensitivity.py [--n 22] [--repeats 7] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import sensiformer as sf


def numpy_average_sensitivity(table):
    """Sum_S |S| g^(S)^2 of g = 1 - 2 table, with a vectorised NumPy FWHT."""
    n = table.size.bit_length() - 1
    a = 1.0 - 2.0 * table
    h = 1
    while h < a.size:
        pairs = a.reshape(-1, 2, h)
        a = np.stack((pairs[:, 0] + pairs[:, 1], pairs[:, 0] - pairs[:, 1]), axis=1).reshape(-1)
        h *= 2
    coef = a / a.size
    sizes = np.zeros(a.size, dtype=np.int64)  # |S| by doubling: sizes of [S, S + 2^k] = [s, s + 1]
    for k in range(n):
        sizes[1 << k:2 << k] = sizes[:1 << k] + 1
    return float(np.dot(sizes, coef * coef))


def timed(fn, times):
    """Run fn once, appending its wall time to ``times``; returns its value."""
    start = time.perf_counter()
    value = fn()
    times.append(time.perf_counter() - start)
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="sensiformer threads (default: all)")
    args = parser.parse_args()

    table = np.random.default_rng(0).integers(0, 2, 2**args.n).astype(np.float64)
    runs = {
        "numpy FWHT": lambda: numpy_average_sensitivity(table),
        "sensiformer fourier": lambda: sf.analysis.average_sensitivity(table, method="fourier", n_threads=args.threads),
        "sensiformer flips": lambda: sf.analysis.average_sensitivity(table, n_threads=args.threads),
    }
    times = {name: [] for name in runs}
    values = {}
    for name, fn in runs.items():  # warm-up: first-touch pages, thread pool
        values[name] = fn()
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every contender alike
        for name, fn in runs.items():
            assert timed(fn, times[name]) == values[name]
    reference = values["numpy FWHT"]
    for name, value in values.items():
        assert abs(value - reference) <= 1e-9 * reference, (name, value, reference)

    threads = sf.get_num_threads() if args.threads is None else args.threads
    print(f"exact average sensitivity of a random Boolean 2^{args.n} truth table "
          f"(as = {reference:.6f}); medians of {args.repeats}, sensiformer threads = {threads}")
    base = statistics.median(times["numpy FWHT"])
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = "" if name == "numpy FWHT" else f"   NumPy / this = {base / med:6.1f}x"
        print(f"  {name:<22} {med * 1e3:9.2f} ms{ratio}")


if __name__ == "__main__":
    main()
