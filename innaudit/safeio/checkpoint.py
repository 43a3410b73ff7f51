"""Safe reading of untrusted checkpoint files.

Every ``torch.load`` in innaudit goes through :func:`load_weights_only`, which spells out
``weights_only=True`` (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` in the environment changes nothing)
and never passes a ``pickle_module``. A file the safe loader refuses is reported with the globals
it asked for and the explicit opt-in ``--trust-checkpoint``; innaudit never falls back to an
unsafe load by itself.

The format is sniffed from the first bytes, not from the extension. A checkpoint is opened and
read once (:func:`read_checkpoint`): the checks, the loads and the report's sha256 all see the
same bytes, so a file swapped between check and load cannot pass one and feed the other. The
cost is the file's size in memory while it loads (twice, briefly, for a file read in several
pieces), bounded by the ``--max-memory`` budget.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
import zipfile
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from innaudit.core.errors import CorruptCheckpointError, LoadError, UnsafeCheckpointError, clean_text
from innaudit.safeio.pickle_scan import unsafe_globals
from innaudit.safeio.preflight import Limits, check_structure, check_zip

__all__ = ["CheckpointFile", "FileFormat", "load_trusted", "load_weights_only", "read_checkpoint"]

TRUST_HINT = (
    "innaudit does not run code from checkpoints; if you made this file yourself and trust it, "
    "re-run with --trust-checkpoint"
)


class FileFormat(str, Enum):
    """What a checkpoint file is, judged by its bytes."""

    TORCH_ZIP = "torch-zip"
    TORCHSCRIPT = "torchscript"
    TORCH_LEGACY = "torch-legacy"
    PICKLE = "pickle"
    SAFETENSORS = "safetensors"
    TORCH_EXPORT = "torch-export"
    NUMPY = "numpy"


@dataclass(frozen=True)
class CheckpointFile:
    """The bytes of one checkpoint file, read once, with what they are."""

    path: Path
    data: bytes

    @cached_property
    def format(self) -> FileFormat:
        """The format, told from the first bytes (a zip by its entries), not from the extension."""
        return _sniff(self.path, self.data)

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes that were checked and loaded."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def stream(self) -> io.BytesIO:
        """A fresh reader over the bytes."""
        return io.BytesIO(self.data)


def _check_path(path: Path) -> None:
    if not path.exists():
        raise LoadError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise LoadError(
            f"model path {str(path)!r} is not a regular file (a folder, FIFO or device); expected a checkpoint file"
        )


CHUNK = 16 << 20
"""Bytes read at a time: ``read(n)`` would reserve all ``n`` bytes at once, which fails under the
``RLIMIT_AS`` of ``--max-memory`` when ``n`` is the budget itself."""


def _read_at_most(handle: io.BufferedReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``handle``, read in :data:`CHUNK` pieces. A file of one piece is
    returned as read; a larger one is held twice for a moment, while its pieces are joined."""
    parts, total = [], 0
    while total < limit:
        part = handle.read(min(CHUNK, limit - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)


def read_checkpoint(path: Path, limits: Limits | None = None) -> CheckpointFile:
    """Open ``path`` once and read it whole, refusing a file larger than the memory budget.

    Raises:
        LoadError: the path is missing, not a regular file, or over ``limits.max_bytes``.
    """
    _check_path(path)
    budget = (limits or Limits()).max_bytes
    with path.open("rb") as handle:
        data = _read_at_most(handle, budget + 1)
    if len(data) > budget:
        raise LoadError(
            f"{path} is larger than the {budget / (1 << 20):.1f} MiB budget; raise "
            "--max-memory if the checkpoint is genuinely that large"
        )
    return CheckpointFile(path, data)


def _sniff(path: Path, data: bytes) -> FileFormat:
    """The format of the file ``path`` whose bytes are ``data``."""
    head, size = data[:16], len(data)
    if not head:
        raise CorruptCheckpointError(f"{path} is empty (0 bytes); expected a PyTorch checkpoint")
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(io.BytesIO(data))
    if head.startswith(b"\x93NUMPY"):
        return FileFormat.NUMPY
    # safetensors before pickle: its 8-byte little-endian header length may start with 0x80
    if len(head) >= 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return FileFormat.SAFETENSORS
    if path.suffix == ".safetensors" and size >= 8:  # named so, and malformed: its checks say how
        return FileFormat.SAFETENSORS
    if head[:1] == b"\x80":
        return FileFormat.TORCH_LEGACY if head[1:4] == b"\x02\x8a\x0a" else FileFormat.PICKLE
    raise CorruptCheckpointError(
        f"{path} is not a checkpoint format innaudit reads (first bytes {head[:8]!r}); expected a "
        "file written by torch.save or innaudit.save_checkpoint"
    )


def _zip_kind(source: io.BytesIO) -> FileFormat:
    """A ``torch.export.save`` archive (``.pt2``, it names its ``archive_format``), a TorchScript
    archive (``code/``, ``constants.pkl``), or a torch.save checkpoint."""
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except Exception:  # a damaged archive is reported by the zip checks that follow
        return FileFormat.TORCH_ZIP
    if any(name.endswith("/archive_format") or name == "archive_format" for name in names):
        return FileFormat.TORCH_EXPORT
    if any("/code/" in name or name.endswith("constants.pkl") for name in names):
        return FileFormat.TORCHSCRIPT
    return FileFormat.TORCH_ZIP


def load_weights_only(
    source: Path | CheckpointFile, map_location: str | torch.device = "cpu", limits: Limits | None = None
) -> Any:
    """``torch.load`` with ``weights_only=True``, errors translated to innaudit's.

    ``source`` is a path (read once here) or the bytes :func:`read_checkpoint` already read.
    Before the tensors are allocated, :mod:`innaudit.safeio.preflight` checks the zip (entry
    count, sizes, compression, CRCs) and walks a meta-device load against ``limits``.

    Raises:
        UnsafeCheckpointError: the file asks for globals the safe loader does not allow.
        CorruptCheckpointError: the file is truncated, corrupt or of an unknown format.
    """
    limits = limits or Limits()
    ckpt = source if isinstance(source, CheckpointFile) else read_checkpoint(source, limits)
    path, fmt = ckpt.path, ckpt.format
    if fmt is FileFormat.TORCHSCRIPT:
        raise UnsafeCheckpointError(f"{path} is a TorchScript archive, which is code, not weights; {TRUST_HINT}")
    if fmt is FileFormat.TORCH_EXPORT:
        raise UnsafeCheckpointError(
            f"{path} is a torch.export (.pt2) archive: code (torch.export.load unpickles it) that "
            "exports forward only; innaudit needs forward and inverse: save a TorchScript module "
            "exporting both and audit it with --trust-checkpoint"
        )
    if fmt in (FileFormat.SAFETENSORS, FileFormat.NUMPY):
        raise LoadError(
            f"{path} is a {fmt.value} file, which holds weights without an "
            "architecture; give a factory: innaudit run file.py:build --weights FILE"
        )
    if fmt is FileFormat.TORCH_ZIP:
        check_zip(ckpt.stream(), limits, path)
    check_structure(_load(ckpt, "meta"), limits, path)
    return _load(ckpt, map_location)


def _load(ckpt: CheckpointFile, map_location: str | torch.device) -> Any:
    try:
        # a stream, not the path: torch routes *.safetensors paths by their extension alone
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr
            return torch.load(ckpt.stream(), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises a dozen types on damaged files
        found = _unsafe_globals(ckpt)
        if found or _is_refusal(str(exc)):
            raise UnsafeCheckpointError(_refusal_message(ckpt.path, found, str(exc))) from None
        raise _corrupt(ckpt.path, exc) from None


def load_trusted(source: Path | CheckpointFile, map_location: str | torch.device = "cpu") -> Any:
    """Unpickle a whole file, code included. Only called under ``--trust-checkpoint``."""
    ckpt = source if isinstance(source, CheckpointFile) else read_checkpoint(source)
    if ckpt.format is FileFormat.TORCH_EXPORT:
        raise LoadError(
            f"{ckpt.path} is a torch.export (.pt2) program, which exports forward only; "
            "innaudit needs the inverse too: save a TorchScript module exporting "
            "forward and inverse (torch.jit.script(...).save) instead"
        )
    try:
        if ckpt.format is FileFormat.TORCHSCRIPT:
            return torch.jit.load(ckpt.stream(), map_location=map_location)
        return torch.load(ckpt.stream(), map_location=map_location, weights_only=False)
    except Exception as exc:
        raise _corrupt(ckpt.path, exc) from None


def _is_refusal(message: str) -> bool:
    return "Weights only load failed" in message and ("GLOBAL" in message or "allowed global" in message)


def _refusal_message(path: Path, found: list[str], message: str) -> str:
    globals_ = found or sorted(set(re.findall(r"GLOBAL ([\w.]+)", message)))
    named = ", ".join(clean_text(g, 120) for g in globals_[:6]) + (" ..." if len(globals_) > 6 else "")
    return (
        f"{path} was refused by the safe loader (weights_only=True): it needs the globals "
        f"{named or 'unknown'}, which can run code; {TRUST_HINT}"
    )


def _unsafe_globals(ckpt: CheckpointFile) -> list[str]:
    """Globals outside the tensor set, found without running the file."""
    if ckpt.format is FileFormat.TORCH_ZIP:
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(ckpt.stream()))
        except Exception:
            return []
    return unsafe_globals(ckpt.stream())


def _corrupt(path: Path, exc: BaseException) -> CorruptCheckpointError:
    # torch's own text may advise turning weights_only off; never pass that on as ours
    text = str(exc)
    detail = type(exc).__name__ if "weights_only" in text else clean_text(f"{type(exc).__name__}: {text}", 200)
    return CorruptCheckpointError(
        f"{path} could not be read as a checkpoint ({detail}); the file is truncated, corrupt "
        "or not written by torch.save"
    )
