"""SIGTERM handled as Ctrl-C.

SLURM (``scancel``, a time limit), ``kill`` and container runtimes stop a job with SIGTERM.
Python's default for it ends the process at once, without ``finally`` blocks, so a sweep's
local worker processes were orphaned and kept computing. Inside ``terminate_as_interrupt()``
SIGTERM raises ``Terminated``, a ``KeyboardInterrupt``, so every path that cleans up after
Ctrl-C (the sweep stops its workers, the store keeps the finished runs) runs for it too.
"""

from __future__ import annotations

import contextlib
import signal
import threading

#: the shell's convention for a process ended by a signal: 128 + its number
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (raised where Ctrl-C's ``KeyboardInterrupt`` would be)."""


def _raise_terminated(signum, frame):
    # later SIGTERMs while the first one's cleanup runs must not interrupt that cleanup
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("SIGTERM")


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM raises ``Terminated`` in the main thread.

    Only where Python's default is in place and signals can be handled (the main thread):
    a handler the caller installed is left alone, and other threads cannot take signals.
    The previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (what shells and SLURM report for these signals)."""
    return EXIT_SIGTERM if isinstance(interrupt, Terminated) else EXIT_SIGINT
