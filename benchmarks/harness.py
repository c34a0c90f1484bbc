"""Shared timing harness of the benchmark scripts (not tests).

Every comparison runs both sides in one process, interleaved (A B A B ...) after a warm-up, and
reports medians: on a shared, noisy machine absolute times mean little, ratios in one run mean a
lot. Rows can be printed as a table and written as JSON to compare across commits.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import sensiformer as sf


@dataclass
class Job:
    """One side-by-side measurement.

    ``ours``/``theirs`` run the work once; ``flops`` is the floating-point work sensiformer
    executes per call (None where FLOPs are not the measure, e.g. bit counting).
    """

    name: str
    config: str
    ours: Callable[[], object]
    theirs: Optional[Callable[[], object]] = None
    theirs_label: str = "pytorch"
    flops: Optional[float] = None
    extra: dict = field(default_factory=dict)


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(job: Job, repeats: int, peak_gflops: Optional[float] = None) -> dict:
    """Warm up both sides once, then alternate them ``repeats`` times; medians and ratio."""
    job.ours()
    if job.theirs is not None:
        job.theirs()
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(seconds(job.ours))
        if job.theirs is not None:
            theirs.append(seconds(job.theirs))
    a = statistics.median(ours)
    b = statistics.median(theirs) if theirs else None
    row = dict(job=job.name, config=job.config, ours_ms=1e3 * a, theirs_ms=None if b is None else 1e3 * b,
               theirs=job.theirs_label if b is not None else None, ratio=None if b is None else b / a,
               gflops=None if job.flops is None else job.flops / a / 1e9, **job.extra)
    row["peak_fraction"] = (row["gflops"] / peak_gflops) if (row["gflops"] and peak_gflops) else None
    return row


def remeasure_peak(rows, machine, threads: int) -> None:
    """Measure the fp32 peak again after the jobs and keep the larger measurement (a busy moment
    on a shared machine only ever lowers it, which would inflate every 'of peak'); the rows'
    fractions follow."""
    from sensiformer._config import measure_peak

    peak = max(machine["peak_gflops_fp32"] or 0.0, round(measure_peak("float32", threads), 1))
    machine["peak_gflops_fp32"] = peak
    for row in rows:
        row["peak_fraction"] = row["gflops"] / peak if row["gflops"] else None


def describe_machine(threads: int, peak: bool = True) -> dict:
    info = sf.show_config(print_out=False, peak=peak)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return dict(date=time.strftime("%Y-%m-%d %H:%M"), cpu=platform.processor() or platform.machine(),
                threads=threads, cpu_path=info["cpu_path"], openmp=info["openmp"], commit=commit,
                version=info["version"], peak_gflops_fp32=info.get("peak_gflops_fp32"),
                peak_gflops_fp64=info.get("peak_gflops_fp64"))


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(rows, machine=None) -> None:
    if machine:
        print(", ".join(f"{k}={v}" for k, v in machine.items() if v is not None))
    print(f"{'job':34s} {'config':34s} {'sensiformer ms':>14s} {'other ms':>10s} {'ratio':>7s} "
          f"{'GFLOP/s':>8s} {'of peak':>8s}")
    for r in rows:
        frac = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}%"
        print(f"{r['job']:34s} {r['config']:34s} {_fmt(r['ours_ms'], '14.2f')} {_fmt(r['theirs_ms'], '10.2f')} "
              f"{_fmt(r['ratio'], '7.2f')} {_fmt(r['gflops'], '8.1f')} {frac:>8s}")
    print("ratio = other / sensiformer (> 1: sensiformer is faster); 'of peak' is the measured fp32 "
          "(or fp64) FMA peak on the same threads")


def write_json(rows, machine, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(machine=machine, rows=rows), indent=1))
    print(f"wrote {path}")


def add_common_args(parser, default_repeats=7):
    parser.add_argument("--threads", type=int, default=sf.get_num_threads())
    parser.add_argument("--repeats", type=int, default=default_repeats)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI smoke run)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser
