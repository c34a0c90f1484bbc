"""Thread defaults, memory limit and build facts."""

from __future__ import annotations

from . import _engine
from ._validation import check_int


def set_num_threads(n: int | None) -> None:
    """Set the default thread count of every parallel call (``None``: OpenMP's default).

    Each call also takes ``n_threads`` to override it. Results never depend on the
    thread count: the same seed gives the same bits with 1 thread or many.
    """
    _engine.set_default_threads(0 if n is None else check_int(n, "n", 1, 512))


def get_num_threads() -> int:
    """The thread count a call with ``n_threads=None`` uses."""
    return _engine.resolve_threads(0)


def set_memory_limit(nbytes: int | None) -> None:
    """Refuse workspaces larger than ``nbytes`` (``None``: 80% of physical memory)."""
    _engine.set_memory_limit(0 if nbytes is None else check_int(nbytes, "nbytes", 1))


def show_config(print_out: bool = True) -> dict:
    """Describe this build: OpenMP, the kernel path chosen for this CPU, flags, threads.

    Returns the facts as a dict (and prints them unless ``print_out=False``).
    """
    from . import __version__

    info = dict(_engine.build_info())
    info["version"] = __version__
    if print_out:
        for key, value in info.items():
            print(f"{key:>16}: {value}")
    return info
