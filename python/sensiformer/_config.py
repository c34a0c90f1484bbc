"""Thread defaults, memory limit and build facts."""

from __future__ import annotations

import os

from . import _native
from ._validation import check_count, check_int


def tqdm_env_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no bars (read now: bars given ``disable=`` explicitly
    would otherwise ignore it)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def set_num_threads(n: int | None) -> None:
    """Set the default thread count of every parallel call (``None``: OpenMP's default).

    Each call also takes ``n_threads`` to override it. Results never depend on the
    thread count: the same seed gives the same bits with 1 thread or many.
    """
    _native.set_default_threads(0 if n is None else check_int(n, "n", 1, 512))


def get_num_threads() -> int:
    """The thread count a call with ``n_threads=None`` uses."""
    return _native.resolve_threads(0)


def set_memory_limit(nbytes: int | None) -> None:
    """Refuse workspaces larger than ``nbytes`` (``None``: 80% of physical memory)."""
    _native.set_memory_limit(0 if nbytes is None else check_count(nbytes, "nbytes", 1))


def measure_peak(dtype="float32", n_threads=None, seconds=0.5) -> float:
    """Measured FMA throughput in GFLOP/s of this CPU's kernel path (the denominator of the
    "fraction of peak" the benchmarks report)."""
    from ._validation import check_choice, check_float, resolve_threads

    check_choice(dtype, "dtype", ("float32", "float64"))
    return _native.measure_peak(float64=dtype == "float64", n_threads=resolve_threads(n_threads),
                                seconds=check_float(seconds, "seconds", 0.01))


def show_config(print_out: bool = True, peak: bool = False) -> dict:
    """Describe this build: OpenMP, the CPU path in use, flags, threads.

    ``cpu_path`` is the build of the numeric code that runs every kernel of this process
    (``"x86-64-v4"``: AVX-512, ``"x86-64-v3"``: AVX2+FMA, ``"baseline"``: portable); ``cpu_paths``
    are the paths this build and CPU can run, widest first; ``vector_bits`` is the path's GEMM
    vector width. The environment variable ``SENSIFORMER_CPU_PATH`` (read when sensiformer is
    imported) forces a path; results are bitwise reproducible for a given path, and x86-64-v3 and
    x86-64-v4 give the same bits.

    With ``peak=True`` it also measures the fp32 and fp64 FMA peak on the default thread count
    (about a second) at the widest vector width this CPU supports (``widest_vector_bits``).
    Returns the facts as a dict (and prints them unless ``print_out=False``).
    """
    from . import _OMP_ENV, __version__

    info = dict(_native.build_info())
    info["version"] = __version__
    info["omp_wait_policy"] = _OMP_ENV["OMP_WAIT_POLICY"]  # as the engine's libgomp read them
    info["omp_spin_count"] = _OMP_ENV["GOMP_SPINCOUNT"]
    if peak:
        info["peak_gflops_fp32"] = round(measure_peak("float32"), 1)
        info["peak_gflops_fp64"] = round(measure_peak("float64"), 1)
        info["peak_vector_bits"] = info["widest_vector_bits"]  # the width the peaks were measured at
    if print_out:
        for key, value in info.items():
            print(f"{key:>16}: {value}")
    return info
