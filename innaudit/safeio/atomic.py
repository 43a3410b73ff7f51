"""The one write path: every file innaudit writes goes through :func:`write_target` or
:func:`append_text`.

A reader sees the old file or the new one, never half of one: a regular file (or a new path)
is written to a temporary file in the same folder, fsync-ed and renamed onto the path. A
character device (``/dev/null``, a terminal) or a FIFO, also behind a symlink such as
``/dev/stdout``, is written in place and stays what it is; a symlink to a file is followed, so
the link stays and the file it points to gets the data. Text is UTF-8; a lone surrogate (a
file name that was not UTF-8) is written as its backslash escape (``\\udcff``), so no writer
fails on it and a JSON string reads back as the same name. Targets are checked before a
command runs by :mod:`innaudit.safeio.targets`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["append_text", "direct_target", "encoded", "printable", "write_target"]


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def encoded(data: bytes | str) -> bytes:
    """``data`` as bytes: UTF-8, with a lone surrogate written as its escape (``\\udcff``)."""
    return data if isinstance(data, bytes) else data.encode("utf-8", errors="backslashreplace")


def printable(text: str) -> str:
    """``text`` as a stream can print it: lone surrogates as their escapes (as :func:`encoded`)."""
    return encoded(text).decode("utf-8")


def _write_atomic(target: Path, payload: bytes) -> None:
    """Write ``payload`` through a temporary file in the same folder, then rename.

    The temporary file is fsync-ed before ``os.replace`` and the folder after it, so a run killed
    at any point leaves the previous file intact; a failed or interrupted write (any exception,
    also the one a SIGTERM handler raises) removes the temporary file.
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
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
        dir_fd = os.open(target.parent, os.O_RDONLY)
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


def _write_in_place(path: str | os.PathLike[str], payload: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    with os.fdopen(fd, "wb") as handle:
        handle.write(payload)
        handle.flush()


def write_target(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` without ever turning a device, a FIFO or a link into a file.

    A character device or FIFO (also through a symlink, e.g. ``/dev/stdout``) is opened and
    written in place (append mode, never truncated, never replaced); anything else is written
    atomically at the path a symlink resolves to, so the link itself stays.

    Raises:
        OSError: the file cannot be written (the caller says which output, in one line).
    """
    payload = encoded(data)
    if direct_target(path):
        _write_in_place(path, payload)
        return
    _write_atomic(Path(os.path.realpath(path)), payload)


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to ``path`` (created if missing) and flush it: a log that grows line by
    line. A symlink is followed; a device or FIFO is written in place.

    Raises:
        OSError: the file cannot be opened or written.
    """
    payload = encoded(text)
    if direct_target(path):
        _write_in_place(path, payload)
        return
    fd = os.open(os.path.realpath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(payload)
        handle.flush()
