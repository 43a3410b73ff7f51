"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["direct_target", "write_atomic", "write_target"]


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The temporary file is fsync-ed before ``os.replace`` and the folder after it, so a run killed
    at any point leaves the previous file intact; a failed write removes the temporary file.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a report is as readable as any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def direct_target(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` must be written in place rather than replaced: it is (or a symlink
    leads to) a character device (``/dev/null``, a terminal) or a FIFO, or it is a symlink into
    ``/dev`` or ``/proc`` (``/dev/stdout``, ``/dev/fd/N``), whose target is an open stream."""
    target = Path(path)
    try:
        info = os.stat(target)
    except OSError:
        return False
    if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
        return True
    return target.is_symlink() and os.path.realpath(target).startswith(("/dev/", "/proc/"))


def write_target(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write a report to ``path`` without ever turning a device, a FIFO or a link into a file.

    A character device or FIFO (also through a symlink, e.g. ``/dev/stdout``) is opened and
    written in place (append mode, never truncated, never replaced); anything else is written
    atomically (:func:`write_atomic`) at the path a symlink resolves to, so the link itself stays.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if direct_target(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
        return
    write_atomic(os.path.realpath(path), payload)
