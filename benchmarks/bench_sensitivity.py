"""Exact average sensitivity of a 2^22 truth table: sensiformer's C kernels vs NumPy (not a test).

The NumPy side is the best vectorised version of the textbook method (the official code's
dense O(4^n) matrix is out of reach at n = 22): a fast Walsh-Hadamard transform with one
reshape-and-stack per stage, then ``sum_S |S| f^(S)^2``. sensiformer runs

* ``average_sensitivity(table, method="fourier")``: the same Fourier route in C (blocked
  radix-8 transform and a per-degree reduction), and
* ``average_sensitivity(table)`` (method="flips", the default): direct flip counting, bit-packed
  for a 0/1 table.

Timings alternate sensiformer / NumPy (harness.py); reported are medians over repeats and the
ratios NumPy / sensiformer (> 1: sensiformer is faster). All results are checked to agree.

    python benchmarks/bench_sensitivity.py [--n 22] [--repeats 7] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse

import harness
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


def jobs(threads, quick=False, n=None):
    """Exact average sensitivity of one random 2^n table: both C routes vs the NumPy FWHT."""
    n = n or (18 if quick else 22)
    table = np.random.default_rng(0).integers(0, 2, 2**n).astype(np.float64)
    reference = numpy_average_sensitivity(table)
    for method in ("fourier", "flips"):
        ours = lambda m=method: sf.analysis.average_sensitivity(table, method=m, n_threads=threads)  # noqa: E731
        value = ours()
        assert abs(value - reference) <= 1e-9 * reference, (method, value, reference)
        yield harness.Job(f"exact avg sensitivity ({method})", f"random table, n={n}", ours,
                          lambda: numpy_average_sensitivity(table), theirs_label="numpy FWHT")


def main():
    parser = harness.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--n", type=int, default=None, help="table size 2^n (default 22; --quick: 18)")
    args = parser.parse_args()
    machine = harness.describe_machine(args.threads, peak=False)
    rows = [harness.measure(job, args.repeats) for job in jobs(args.threads, args.quick, args.n)]
    harness.print_table(rows, machine)
    if args.json:
        harness.write_json(rows, machine, args.json)


if __name__ == "__main__":
    main()
