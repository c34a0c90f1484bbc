"""Atomic writes of ``.npz`` files: models (``save``) and trainer checkpoints.

A file is written to a uniquely named temporary file in the target's directory
(``.<name>.<host>.<pid>.<random>.tmp``: concurrent writers, threads or processes, never share
one), flushed and fsynced, renamed over the target, and the directory is fsynced so the rename
survives a power loss. A failed write removes its temporary file and leaves the previous file
intact. A writer killed outright (SIGKILL, OOM) cannot clean up, so every save first removes the
temporary files of its target that dead processes of this host left behind.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

import numpy as np

# mkstemp creates 0600 files; a saved model should get the permissions any new file gets
_UMASK = os.umask(0)
os.umask(_UMASK)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _temp_pattern(path: Path):
    """Our temporary files for ``path``: (host, pid) of their writer in groups 1 and 2."""
    return re.compile(rf"^\.{re.escape(path.name)}\.([A-Za-z0-9_-]+)\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path) -> list[Path]:
    """Remove temporary files of ``path`` whose writer (a process of this host) is dead.

    Only names of our own pattern are considered; a file of another host (a shared filesystem)
    or of a live process is left alone. Returns the removed paths.
    """
    path = Path(path)
    pattern, host, removed = _temp_pattern(path), _host(), []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m and m.group(1) == host and not _alive(int(m.group(2))):
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:  # another writer cleaned it first
                pass
    return removed


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_npz_atomically(path, arrays: dict) -> None:
    """Write ``arrays`` as an ``.npz`` archive at ``path``, atomically (see the module docstring)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)
