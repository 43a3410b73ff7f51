"""``--weights model.safetensors``: read with the ``safetensors`` package after a header pre-check.

safetensors holds no code, but its loader still trusts the header for how much to read and
allocate: a 100 MB header of millions of zero-size entries costs seconds and hundreds of MB
before anything is refused. Before calling the library innaudit reads the 8-byte length itself and checks:

- the header is at most :data:`MAX_HEADER_BYTES` and fits in the file;
- it is a JSON object without duplicate keys (the library keeps the last one silently), with at
  most ``limits.max_entries`` tensors;
- each tensor's ``shape`` x dtype size equals its ``data_offsets`` span, the spans lie inside the
  file, and their total fits ``limits.max_bytes`` and equals the data section exactly.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from torch import Tensor

from innaudit.core.errors import CorruptCheckpointError, LoadError, clean_text, short_repr
from innaudit.safeio.checkpoint import CheckpointFile, read_checkpoint
from innaudit.safeio.preflight import Limits

__all__ = ["MAX_HEADER_BYTES", "check_header", "read_safetensors"]

MAX_HEADER_BYTES = 16 << 20

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


def _bad(path: Path, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{path} is not a valid safetensors file: {clean_text(why, 200)}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def check_header(path: Path, data: bytes, limits: Limits) -> dict[str, Any]:
    """Check the header of the file ``path`` whose bytes are ``data`` without the library;
    returns it (``__metadata__`` removed).

    Raises:
        CorruptCheckpointError: the header is malformed or disagrees with the file.
        LoadError: the file claims more than ``limits`` allows.
    """
    size = len(data)
    if size < 8:
        raise _bad(path, f"{size} bytes, shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES:
        raise LoadError(f"{path} declares a {length}-byte safetensors header; at most {MAX_HEADER_BYTES} are accepted")
    if 8 + length > size:
        raise _bad(path, f"the header claims {length} bytes but the file has {size - 8} after its length")
    raw = data[8 : 8 + length]
    if not raw.strip():
        raise _bad(path, "its header is empty; expected a JSON object naming the tensors")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(path, f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    header.pop("__metadata__", None)
    if not header:
        raise _bad(path, "its header names no tensor; expected the tensors of a state dict")
    if len(header) > limits.max_entries:
        raise LoadError(f"{path} holds {len(header)} tensors; at most {limits.max_entries} are accepted")
    _check_spans(path, header, size - 8 - length, limits)
    return header


def _whole(value: Any) -> bool:
    """A JSON integer >= 0 (not a float such as 0.5, not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_spans(path: Path, header: dict[str, Any], data_bytes: int, limits: Limits) -> None:
    total = 0
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            size = _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"entry {name!r} lacks a known dtype, a shape or data_offsets") from None
        if not isinstance(shape, list) or not all(_whole(s) for s in shape):
            raise _bad(path, f"tensor {name!r} has shape {short_repr(shape, 80)}; expected a list of whole sizes >= 0")
        if not (_whole(begin) and _whole(end)):
            raise _bad(
                path,
                f"tensor {name!r} has data_offsets {short_repr(entry['data_offsets'], 80)}; "
                "expected two whole byte offsets [begin, end]",
            )
        declared = math.prod(shape) * size
        if not (0 <= begin <= end <= data_bytes) or end - begin != declared:
            raise _bad(
                path,
                f"tensor {name!r} declares {declared} bytes at [{begin}, {end}) in a {data_bytes}-byte data section",
            )
        total += declared
    if total > limits.max_bytes:
        raise LoadError(
            f"{path} declares {total} bytes of tensors, over the {limits.max_bytes}-byte "
            "budget; raise --max-memory if it is genuine"
        )
    if total != data_bytes:
        raise _bad(path, f"tensors cover {total} of {data_bytes} data bytes (trailing or missing bytes)")


def read_safetensors(source: Path | CheckpointFile, limits: Limits | None = None) -> dict[str, Tensor]:
    """The tensors of a checked safetensors file (a path, or bytes already read), on the CPU.

    Raises:
        LoadError: the ``safetensors`` package is missing, or the file claims too much.
        CorruptCheckpointError: the file is malformed.
    """
    limits = limits or Limits()
    ckpt = source if isinstance(source, CheckpointFile) else read_checkpoint(source, limits)
    path = ckpt.path
    check_header(path, ckpt.data, limits)
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load
    except ImportError:
        raise LoadError(
            f"{path} is a safetensors file; reading it needs the safetensors package "
            "(pip install safetensors, or innaudit[adapters])"
        ) from None
    try:
        return load(ckpt.data)
    except SafetensorError as exc:
        raise _bad(path, str(exc)) from None
