"""Checking output targets before a command runs: every file innaudit is asked to write.

A command names its outputs (``-o json=PATH``, ``--save-witnesses DIR``, ``init PATH``,
``train -o PATH``, ``--monitor-log PATH``) and its inputs (the model, weights, config, data
files, the baseline, the report or log being rendered). :func:`check_targets` refuses, before
any work, a target that is a folder or a socket, sits in a folder that does not exist or cannot
take a new file, is given twice, or is one of the inputs (the same file by device and inode, so
a symlink or a hard link to an input is caught too): an output must never destroy what the
command reads. Character devices and FIFOs pass (they are written in place by
:func:`innaudit.safeio.atomic.write_target`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from innaudit.core.errors import UsageError, clean_text
from innaudit.safeio.atomic import direct_target

__all__ = ["Target", "check_target", "check_targets", "identity"]

Target = tuple[str, Path]
"""``(label, path)``: how the user named the output (``-o json=r.json``) and where it goes."""


def identity(path: Path) -> tuple[object, ...]:
    """What makes two paths the same file: device and inode when it exists, else its real path."""
    try:
        info = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)


def _shown(path: object) -> str:
    return repr(clean_text(path, 300))


def _folder_takes_a_file(label: str, path: Path) -> None:
    folder = Path(os.path.realpath(path)).parent
    try:  # a file is renamed into place: the folder itself must take a new file
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
    except OSError as exc:
        raise UsageError(
            f"{label}: cannot write in folder {_shown(folder)} ({exc.strerror}); choose a writable folder"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_target(label: str, path: Path) -> None:
    """Refuse one target that cannot take a file (see the module docstring).

    Raises:
        UsageError: a missing folder, a folder, a socket, an unwritable device or folder.
    """
    parent = path.parent if str(path.parent) else Path(".")
    if not os.path.isdir(parent):
        raise UsageError(f"{label}: folder {_shown(path.parent)} does not exist; create it first")
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UsageError(f"{label}: cannot be checked ({exc.strerror})") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{label} is a folder; expected a file path")
    if direct_target(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{label} is a device or FIFO that cannot be written (permission denied)")
        return
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{label} is neither a regular file, a character device nor a FIFO; expected a file path")
    _folder_takes_a_file(label, path)


def check_targets(targets: Sequence[Target], inputs: Iterable[Path] = ()) -> None:
    """Check every target before the command runs: each writable, none an input, none twice.

    Raises:
        UsageError: the first target that :func:`check_target` refuses, that is the same file
            as an input of the command, or that another target of the command also names.
    """
    read = {identity(p): p for p in inputs if p.exists()}
    seen: dict[tuple[object, ...], str] = {}
    for label, path in targets:
        check_target(label, path)
        key = identity(path)
        if key in read:
            raise UsageError(f"{label} is {_shown(read[key])}, an input of this command; write the output elsewhere")
        if key in seen:
            raise UsageError(f"{label}: {seen[key]} goes to the same file; give each output its own path")
        seen[key] = label
