"""Data files: ``.npy``, ``.npz[:key]`` and ``.pt[:key]`` tensors (read without pickles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, InnauditError, clean_text
from .checkpoint import load_weights_only

__all__ = ["FILE_SUFFIXES", "read_array", "split_file_spec"]

FILE_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def split_file_spec(spec: str) -> tuple[Path, str | None] | None:
    """``(path, key)`` when ``spec`` names a data file (``x.npz:images``), else None."""
    for suffix in FILE_SUFFIXES:
        head, sep, key = spec.partition(suffix + ":")
        if sep:
            return Path(head + suffix), key or None
        if spec.endswith(suffix):
            return Path(spec), None
    return (Path(spec), None) if Path(spec).is_file() else None


def read_array(path: Path, key: str | None) -> np.ndarray | torch.Tensor:
    """Open a data file; ``.npy`` is memory-mapped, so only the batches used are read."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npy":
            return _check(np.load(path, mmap_mode="r", allow_pickle=False), path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _check(_pick(dict(archive.items()), key, path), path)
        if path.suffix in (".pt", ".pth"):
            return _check(_pick(load_weights_only(path), key, path), path)
    except InnauditError as exc:
        raise DataError(str(exc)) from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"data file {path} cannot be read ({clean_text(exc, 200)}); expected a "
                        "numeric array saved with numpy.save / numpy.savez / torch.save") from None
    raise DataError(f"data file {path} has suffix {path.suffix!r}; expected .npy, .npz or .pt")


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
        raise DataError(f"{path} {what}; name one as {path}:KEY, one of: "
                        f"{clean_text(', '.join(map(str, arrays)), 300) or 'none'}")
    raise DataError(f"{path} holds a {type(obj).__name__}; expected an array or tensor")


def _check(array: Any, path: Path) -> np.ndarray | torch.Tensor:
    if not isinstance(array, (np.ndarray, torch.Tensor)):
        raise DataError(f"{path} holds a {type(array).__name__}; expected an array or tensor")
    kind = array.dtype.kind if isinstance(array, np.ndarray) else (
        "f" if array.is_floating_point() else "i")
    if kind not in "fiub" or array.ndim < 2:
        raise DataError(f"{path} holds an array of dtype {array.dtype} and shape "
                        f"{tuple(array.shape)}; expected numbers shaped (samples, ...)")
    return array
