"""Shared timing harness of the benchmark scripts (not tests).

Every comparison runs both sides in one process, interleaved (A B A B ...) after a warm-up, and
reports medians: on a shared, noisy machine absolute times mean little, ratios in one run mean a
lot. Rows can be printed as a table and written as JSON to compare across commits.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import sensiformer as sf

# sensiformer's import set GOMP_SPINCOUNT for its own libgomp, which has read it by now (README,
# Threads); PyTorch, imported later into this process, keeps its own OpenMP defaults.
for _key in sf._OMP_ENV_SET:
    os.environ.pop(_key, None)


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


def on_path(path: str, fn: Callable[[], object]) -> Callable[[], object]:
    """fn with every engine call on CPU path ``path`` (the process-wide path is switched before each call)."""
    from sensiformer import _native

    def run():
        _native.select_cpu_path(path)
        return fn()

    return run


def measure_paths(job: Job, paths, repeats: int, peak_gflops: Optional[float] = None) -> dict:
    """The job's sensiformer side on each CPU path and the other side, interleaved (p1 p2 ... other, p1 p2 ...
    other, ...) after a warm-up of each; medians per path and each path's ratio to the other side."""
    from sensiformer import _native

    sides = {path: on_path(path, job.ours) for path in paths}
    if job.theirs is not None:
        sides[job.theirs_label] = job.theirs
    times = {name: [] for name in sides}
    for fn in sides.values():
        fn()
    for _ in range(repeats):
        for name, fn in sides.items():
            times[name].append(seconds(fn))
    _native.select_cpu_path("auto")
    med = {name: statistics.median(t) for name, t in times.items()}
    theirs = med.get(job.theirs_label) if job.theirs is not None else None
    row = dict(job=job.name, config=job.config, theirs=job.theirs_label if theirs else None,
               theirs_ms=None if theirs is None else 1e3 * theirs, paths={})
    for path in paths:
        gflops = None if job.flops is None else job.flops / med[path] / 1e9
        row["paths"][path] = dict(ms=1e3 * med[path], ratio=None if theirs is None else theirs / med[path],
                                  gflops=gflops, peak_fraction=gflops / peak_gflops if gflops and peak_gflops else None)
    return row


def print_path_table(rows, paths, machine=None) -> None:
    """One line per job: each path's time, its ratio to the other side, and the first path's speed-up over
    each other path."""
    if machine:
        print(", ".join(f"{k}={v}" for k, v in machine.items() if v is not None))
    head = f"{'job':34s} {'config':30s}" + "".join(f" {p + ' ms':>15s}" for p in paths) + f" {'other ms':>10s}"
    head += "".join(f" {'ratio ' + p:>17s}" for p in paths) + "".join(f" {paths[0] + ' vs ' + p:>24s}" for p in paths[1:])
    print(head)
    for r in rows:
        line = f"{r['job']:34s} {r['config'][:30]:30s}"
        line += "".join(f" {r['paths'][p]['ms']:15.2f}" for p in paths) + f" {_fmt(r['theirs_ms'], '10.2f')}"
        line += "".join(f" {_fmt(r['paths'][p]['ratio'], '17.2f')}" for p in paths)
        line += "".join(f" {r['paths'][p]['ms'] / r['paths'][paths[0]]['ms']:24.2f}" for p in paths[1:])
        print(line)
    print(f"ratio = other / sensiformer on that path (> 1: sensiformer is faster); '{paths[0]} vs P' = P's time / "
          f"{paths[0]}'s (> 1: {paths[0]} is faster)")


def remeasure_peak(rows, machine, threads: int) -> None:
    """Measure the fp32 peak again after the jobs and keep the larger measurement (a busy moment
    on a shared machine only ever lowers it, which would inflate every 'of peak'); the rows'
    fractions follow."""
    from sensiformer._config import measure_peak

    peak = max(machine["peak_gflops_fp32"] or 0.0, round(measure_peak("float32", threads), 1))
    machine["peak_gflops_fp32"] = peak
    for row in rows:
        for side in row.get("paths", {}).values() or [row]:
            side["peak_fraction"] = side["gflops"] / peak if side["gflops"] else None


def describe_machine(threads: int, peak: bool = True) -> dict:
    info = sf.show_config(print_out=False, peak=peak)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return dict(date=time.strftime("%Y-%m-%d %H:%M"), cpu=cpu_model(), threads=threads, cpu_path=info["cpu_path"],
                vector_bits=info["vector_bits"], cpu_paths="/".join(info["cpu_paths"]), openmp=info["openmp"],
                commit=commit, version=info["version"], omp_spin_count=info["omp_spin_count"],
                peak_gflops_fp32=info.get("peak_gflops_fp32"),
                peak_gflops_fp64=info.get("peak_gflops_fp64"), peak_vector_bits=info["widest_vector_bits"])


def cpu_model() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
          "(or fp64) FMA peak on the same threads, at the widest vector width of this CPU (peak_vector_bits)")


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
    parser.add_argument("--path", default=None,
                        help="CPU path(s) of the engine, e.g. x86-64-v3, or x86-64-v3,x86-64-v4 (or 'all'): one path "
                             "runs every job on it; several time each job on every path side by side")
    return parser


def parse_paths(spec: Optional[str]) -> list:
    """The --path list, checked against the paths this build and CPU run ('all': every one of them)."""
    runnable = list(sf.show_config(print_out=False)["cpu_paths"])
    if not spec:
        return []
    paths = runnable if spec == "all" else [p.strip() for p in spec.split(",") if p.strip()]
    bad = [p for p in paths if p not in runnable]
    if bad:
        raise SystemExit(f"--path: {bad} cannot run here; this build and CPU run {runnable}")
    return paths
