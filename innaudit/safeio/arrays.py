"""Data files: ``.npy``, ``.npz[:key]`` and ``.pt[:key]`` / ``.pth`` / ``.t7`` tensors, read without
pickles (``.t7`` is what the paper's code calls its ``torch.save``-d DTD and Places tensors)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from innaudit.core.errors import DataError, InnauditError, clean_text
from innaudit.safeio.checkpoint import load_weights_only

__all__ = ["FILE_SUFFIXES", "read_array", "split_file_spec"]

FILE_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".t7")


def split_file_spec(spec: str) -> tuple[Path, str | None] | None:
    """``(path, key)`` when ``spec`` names a data file (``x.npz:images``), else None."""
    for suffix in FILE_SUFFIXES:
        head, sep, key = spec.partition(suffix + ":")
        if sep:
            return Path(head + suffix), key or None
        if spec.endswith(suffix):
            return Path(spec), None
    return (Path(spec), None) if Path(spec).is_file() else None


MAX_NPZ_ENTRIES = 1024
"""Most entries an ``.npz`` may list."""

MAX_DECLARED = 64 << 30
"""Largest uncompressed size an ``.npz`` entry may declare (64 GiB): only ``--samples`` rows of
it are ever read, so this only refuses the absurd."""

MAX_RATIO = 200
"""Largest compression ratio of an ``.npz`` entry over 64 MiB (real data is far below it;
DEFLATE's ceiling is about 1030, reached by runs of zeros, the zip-bomb material)."""

MAX_READ = 4 << 30
"""Most bytes read from one data file (the rows used; the whole array when it is stored in
Fortran order)."""


def read_array(path: Path, key: str | None, limit: int | None = None) -> np.ndarray | torch.Tensor:
    """Open a data file and return at most its first ``limit`` samples (all when None).

    ``.npy`` is read, not memory-mapped: its first ``limit`` rows are copied into memory once,
    so a file that another process truncates or rewrites during the run cannot change the data
    mid-run or kill the process (a live map of a truncated file raises SIGBUS on the next read).
    ``.npz`` is checked before anything is inflated (entry count, declared size, compression
    ratio), only the named entry is opened, and only its first ``limit`` rows are
    decompressed, so a small archive that unpacks to gigabytes costs what ``--samples`` asks
    for. Either way at most :data:`MAX_READ` bytes are read. ``.pt`` goes through the
    weights-only loader and its preflight.
    """
    if not path.exists():
        raise DataError(f"data file {clean_text(path, 300)!r} does not exist")
    if not path.is_file():
        raise DataError(
            f"data file {clean_text(path, 300)!r} is not a regular file (a folder, FIFO or "
            "device); expected a .npy, .npz or .pt file"
        )
    try:
        if path.suffix == ".npy":
            with path.open("rb") as stream:
                return _check(_read_rows(stream, limit, str(path)), path)
        if path.suffix == ".npz":
            return _check(_read_npz(path, key, limit), path)
        if path.suffix in (".pt", ".pth", ".t7"):
            tensor = _check(_pick(load_weights_only(path), key, path), path)
            return tensor if limit is None else tensor[:limit]
    except InnauditError as exc:
        from innaudit.safeio.checkpoint import TRUST_HINT

        hint = "a data file needs no code: save the tensor itself with torch.save or numpy.save"
        raise DataError(str(exc).replace(TRUST_HINT, hint)) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"data file {clean_text(path, 300)} cannot be read ({clean_text(exc, 200)}); "
            "expected a numeric array saved with numpy.save / numpy.savez / torch.save"
        ) from None
    raise DataError(
        f"data file {clean_text(path, 300)} has suffix {clean_text(path.suffix, 20)!r}; expected .npy, .npz, .pt or .t7"
    )


def _npz_entry(archive: zipfile.ZipFile, key: str | None, path: Path) -> zipfile.ZipInfo:
    """The entry ``key`` names (the only one when None), after the count check."""
    entries = archive.infolist()
    if len(entries) > MAX_NPZ_ENTRIES:
        raise DataError(f"{path} lists {len(entries)} entries; at most {MAX_NPZ_ENTRIES} are read")
    names = {e.filename.removesuffix(".npy"): e for e in entries}
    if key is None and len(names) == 1:
        return next(iter(names.values()))
    if key is not None and key in names:
        return names[key]
    what = f"has no entry {key!r}" if key else "holds several arrays"
    raise DataError(
        f"{path} {what}; name one as {path}:KEY, one of: {clean_text(', '.join(sorted(names)), 300) or 'none'}"
    )


def _read_npz(path: Path, key: str | None, limit: int | None) -> np.ndarray:
    with zipfile.ZipFile(path) as archive:
        info = _npz_entry(archive, key, path)
        name = clean_text(info.filename, 80)
        if info.file_size > MAX_DECLARED:
            raise DataError(
                f"{path}: entry {name} declares {info.file_size} bytes; at most {MAX_DECLARED >> 30} GiB are accepted"
            )
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > 64 << 20 and ratio > MAX_RATIO:
            raise DataError(
                f"{path}: entry {name} inflates {ratio:.0f}-fold ({info.compress_size} -> "
                f"{info.file_size} bytes); refused as a possible zip bomb (real data "
                f"compresses less than {MAX_RATIO}-fold)"
            )
        with archive.open(info) as stream:
            return _read_rows(stream, limit, f"{path}:{name}")


def _read_rows(stream: Any, limit: int | None, where: str) -> np.ndarray:
    """The first ``limit`` rows of the ``.npy`` in ``stream``, reading only their bytes."""
    fmt = np.lib.format
    version = fmt.read_magic(stream)
    reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = reader(stream)
    if dtype.hasobject:
        raise DataError(f"{where} cannot be read: it holds Python objects; expected numbers (pickles are never loaded)")
    if not shape:
        raise DataError(f"{where} holds a scalar (shape ()); expected numbers shaped (samples, ...)")
    if any(size < 0 for size in shape):
        raise DataError(f"{where} declares negative dimensions {shape}; expected a file written by numpy.save")
    rows = shape[0] if limit is None else min(shape[0], limit)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    total = shape[0] * row_bytes
    if rows * row_bytes > MAX_READ:
        raise DataError(
            f"{where}: its first {rows} rows hold {rows * row_bytes} bytes; at most "
            f"{MAX_READ >> 30} GiB of a data file are read: lower --samples"
        )
    if fortran and rows < shape[0]:
        if total > MAX_READ:
            raise DataError(
                f"{where} is stored in Fortran order, so its first rows cannot be read "
                f"alone, and it holds {total} bytes; save it in C order (np.ascontiguousarray)"
            )
        return _read_exact(stream, total, dtype, shape, where, fortran=True)[:rows].copy()
    return _read_exact(stream, rows * row_bytes, dtype, (rows, *shape[1:]), where, fortran)


def _read_exact(
    stream: Any, count: int, dtype: np.dtype[Any], shape: tuple[int, ...], where: str, fortran: bool
) -> np.ndarray:
    buffer = bytearray(count)
    view, done = memoryview(buffer), 0
    while done < count:
        got = stream.readinto(view[done:])
        if not got:
            raise DataError(f"{where} is truncated: {done} of {count} bytes present")
        done += got
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _pick(obj: Any, key: str | None, path: Path) -> Any:
    if isinstance(obj, (np.ndarray, torch.Tensor)) and key is None:
        return obj
    if isinstance(obj, dict):
        arrays = [k for k, v in obj.items() if isinstance(v, (np.ndarray, torch.Tensor))]
        if key is None and len(arrays) == 1:
            return obj[arrays[0]]
        if key is not None and key in obj:
            return obj[key]
        what = f"has no entry {key!r}" if key else "holds several arrays"
        raise DataError(
            f"{path} {what}; name one as {path}:KEY, one of: {clean_text(', '.join(map(str, arrays)), 300) or 'none'}"
        )
    raise DataError(f"{path} holds a {type(obj).__name__}; expected an array or tensor")


def _check(array: Any, path: Path) -> np.ndarray | torch.Tensor:
    if not isinstance(array, (np.ndarray, torch.Tensor)):
        raise DataError(f"{path} holds a {type(array).__name__}; expected an array or tensor")
    if isinstance(array, torch.Tensor) and array.layout != torch.strided:
        raise DataError(
            f"{path} holds a {str(array.layout).removeprefix('torch.')} tensor; expected a "
            "dense tensor (call .to_dense() before torch.save)"
        )
    kind = (
        array.dtype.kind
        if isinstance(array, np.ndarray)
        else (
            "c"
            if array.is_complex()
            else "f"
            if array.is_floating_point()
            else "b"
            if array.dtype == torch.bool
            else "i"
        )
    )
    if kind not in "fiub" or array.ndim < 2:
        raise DataError(
            f"{path} holds an array of dtype {array.dtype} and shape "
            f"{tuple(array.shape)}; expected real numbers shaped (samples, ...)"
        )
    if isinstance(array, np.ndarray) and kind == "f" and array.dtype.itemsize > 8:
        raise DataError(f"{path} holds {array.dtype} values, which torch cannot read; save them as float64 or float32")
    if array.shape[0] == 0:
        raise DataError(f"{path} holds no samples (shape {tuple(array.shape)}); expected at least one")
    if isinstance(array, np.ndarray) and not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))  # big-endian: the rows asked for, copied
    return array
