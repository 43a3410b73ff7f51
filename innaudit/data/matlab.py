"""SVHN's ``.mat`` files (MATLAB level 5), read a sample at a time.

SVHN (http://ufldl.stanford.edu/housenumbers/) ships ``train_32x32.mat`` / ``test_32x32.mat``
with ``X`` of shape ``(32, 32, 3, N)`` uint8 and labels ``y``. MATLAB stores arrays column-major,
so sample ``n`` of an ``(H, W, C, N)`` array is one contiguous block of ``H W C`` values: the
reader walks the file's data elements (MAT-File Format, level 5: a 128-byte header, then
tagged elements, ``miMATRIX`` = 14 holding flags, dimensions, name and the real part,
``miCOMPRESSED`` = 15 a zlib stream of one element) to the variable asked for and reads (or
inflates) only the bytes of the first ``--samples`` samples. It needs no pickle and no scipy.
Samples come out as ``(n, H, W, C)`` (torchvision's SVHN transposes the same way).

SPEC: ``x.mat`` (variable ``X``) or ``x.mat:NAME``. The variable must be a real numeric array
of 3 dimensions ``(H, W, N)`` or 4 ``(H, W, C, N)``, samples last; MATLAB 7.3 files (HDF5) are
refused with a note to save them as ``-v7``.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from innaudit.core.errors import DataError, clean_text

__all__ = ["MAX_INFLATE", "read_mat"]

MAX_INFLATE = 4 << 30
"""Most bytes inflated from one compressed variable (the samples asked for and the headers)."""

_MATRIX, _COMPRESSED = 14, 15
_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_NUMERIC_CLASSES = range(6, 16)  # mxDOUBLE .. mxUINT64


class _Inflating:
    """A read-only stream over a zlib-compressed element, inflated as it is read."""

    def __init__(self, raw: BinaryIO, size: int, where: str) -> None:
        self.raw, self.left, self.where = raw, size, where
        self.inflater = zlib.decompressobj()
        self.buffer = b""
        self.total = 0

    def read(self, count: int) -> bytes:
        while len(self.buffer) < count and (self.left > 0 or self.inflater.unconsumed_tail):
            chunk = self.inflater.unconsumed_tail
            if not chunk:
                chunk = self.raw.read(min(1 << 20, self.left))
                if not chunk:
                    break
                self.left -= len(chunk)
            try:
                out = self.inflater.decompress(chunk, max(count - len(self.buffer), 1 << 16))
            except zlib.error as exc:
                raise DataError(f"{self.where}: a compressed variable is corrupt ({exc})") from None
            self.total += len(out)
            if self.total > MAX_INFLATE:
                raise DataError(f"{self.where}: a compressed variable inflates past {MAX_INFLATE >> 30} GiB; refused")
            self.buffer += out
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data


def _exact(stream: Any, count: int, where: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise DataError(f"{where} is truncated: {len(data)} of {count} bytes present")
    return data


def _tag(stream: Any, order: str, where: str) -> tuple[int, int, bytes | None]:
    """``(type, size, small data or None)`` of the next element tag; ``(0, 0, None)`` at the end."""
    head = stream.read(8)
    if not head:
        return 0, 0, None
    if len(head) < 8:
        raise DataError(f"{where} is truncated inside an element tag")
    first, second = struct.unpack(order + "II", head)
    if first >> 16:  # small data element: size and type in the first word, data in the second
        return first & 0xFFFF, first >> 16, head[4 : 4 + (first >> 16)]
    return first, second, None


def _sub(stream: Any, order: str, where: str) -> tuple[int, bytes]:
    """One sub-element of a matrix (flags, dimensions, name), padded to 8 bytes."""
    kind, size, small = _tag(stream, order, where)
    if small is not None:
        return kind, small
    if size > 1 << 20:
        raise DataError(f"{where}: a matrix header declares {size} bytes; refused")
    data = _exact(stream, size, where)
    _exact(stream, -size % 8, where)
    return kind, data


def _header(handle: BinaryIO, where: str) -> str:
    head = handle.read(128)
    if len(head) < 128:
        raise DataError(f"{where} is not a MATLAB .mat file (shorter than its 128-byte header)")
    if head.startswith((b"MATLAB 7.3", b"\x89HDF")):
        raise DataError(f"{where} is a MATLAB 7.3 (HDF5) file; save it as a level 5 file (save -v7) to read it")
    if not head.startswith(b"MATLAB 5.0"):
        raise DataError(f"{where} is not a MATLAB level 5 .mat file (SVHN's format); expected a 'MATLAB 5.0' header")
    indicator = head[126:128]
    if indicator not in (b"IM", b"MI"):
        raise DataError(f"{where} has no valid byte-order mark in its header")
    return "<" if indicator == b"IM" else ">"


def _matrix(stream: Any, order: str, where: str) -> tuple[str, tuple[int, ...], int, int, int]:
    """``(name, dims, class, data type, data bytes)`` of a matrix whose tag was just read; the
    stream is left at its real part's data."""
    _, flags = _sub(stream, order, where)
    cls, complex_flag = (flags[0] if order == "<" else flags[3]), (flags[1 if order == "<" else 2] & 0x08)
    _, dims_raw = _sub(stream, order, where)
    dims = struct.unpack(f"{order}{len(dims_raw) // 4}i", dims_raw[: len(dims_raw) // 4 * 4])
    _, name_raw = _sub(stream, order, where)
    name = name_raw.decode("latin1")
    if cls not in _NUMERIC_CLASSES or complex_flag:
        return name, tuple(dims), cls, 0, 0
    kind, size, small = _tag(stream, order, where)
    if small is not None:
        raise DataError(f"{where}: variable {clean_text(name, 40)!r} is too small to hold samples")
    return name, tuple(dims), cls, kind, size


def _variables(handle: BinaryIO, order: str, where: str, key: str) -> tuple[Any, tuple[int, ...], str, int]:
    """Walk to variable ``key``: its stream (positioned at its data), dims, dtype and data bytes."""
    seen: list[str] = []
    while True:
        kind, size, small = _tag(handle, order, where)
        if kind == 0 and small is None and size == 0:
            break
        start = handle.tell()
        if kind not in (_MATRIX, _COMPRESSED):
            handle.seek(start + size + (-size % 8 if kind != _COMPRESSED else 0))
            continue
        stream: Any = handle
        if kind == _COMPRESSED:
            stream = _Inflating(handle, size, where)
            inner, _, _ = _tag(stream, order, where)
            if inner != _MATRIX:
                handle.seek(start + size)
                continue
        name, dims, _, dtype, nbytes = _matrix(stream, order, where)
        if name == key and dtype:
            if dtype not in _TYPES:
                raise DataError(
                    f"{where}: variable {clean_text(key, 40)!r} has MAT data type {dtype}; expected numbers"
                )
            return stream, dims, order + _TYPES[dtype], nbytes
        seen.append(name)
        handle.seek(start + size + (-size % 8 if kind == _MATRIX else 0))
    raise DataError(
        f"{where} has no numeric variable {clean_text(key, 40)!r}; name one as FILE.mat:NAME, one of: "
        f"{clean_text(', '.join(seen), 200) or 'none'}"
    )


def read_mat(path: Path, key: str | None, limit: int) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """The first ``limit`` samples of variable ``key`` (default ``X``) as ``(n, H, W, C)`` (or
    ``(n, H, W)``), the report's origin and the reader's step."""
    where, key = clean_text(path, 300), key or "X"
    with path.open("rb") as handle:
        order = _header(handle, where)
        stream, dims, dtype, nbytes = _variables(handle, order, where, key)
        if len(dims) not in (3, 4) or min(dims) <= 0:
            raise DataError(
                f"{where}: variable {clean_text(key, 40)!r} has dimensions {dims}; expected SVHN's "
                "(H, W, C, N) or (H, W, N), samples last"
            )
        item = np.dtype(dtype).itemsize
        per_sample = math.prod(dims[:-1])
        if nbytes != math.prod(dims) * item:
            raise DataError(f"{where}: variable {clean_text(key, 40)!r} declares {nbytes} bytes for dimensions {dims}")
        rows = min(limit, dims[-1])
        data = _exact(stream, rows * per_sample * item, where)
    samples = np.frombuffer(data, dtype=dtype).reshape((*dims[:-1], rows), order="F")
    array = np.ascontiguousarray(np.moveaxis(samples, -1, 0)).astype(np.dtype(dtype).newbyteorder("="))
    origin = {"format": "mat-v5", "path": str(path), "variable": key, "dims": list(dims)}
    step = f"MATLAB variable {key} {dims} read column-major, samples along its last axis"
    return array, origin, (step,)
