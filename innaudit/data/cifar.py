"""CIFAR-10 / CIFAR-100 "python version" batches, read without running any pickle code.

The batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``; ``cifar-100-python/train``,
``test``) are Python 2 pickles of a dict whose ``data`` entry is an ``(N, 3072)`` uint8 array,
each row one 32x32 image in CHW order (1024 red, 1024 green, 1024 blue values, row-major), as
https://www.cs.toronto.edu/~kriz/cifar.html documents and torchvision reads them. A pickle can
call any importable function while it loads, so innaudit never calls ``pickle.load``: its
:class:`BatchUnpickler` resolves only the globals a pickled numpy array needs (``ndarray``,
``dtype``, ``_reconstruct``, ``scalar``, ``_frombuffer`` and ``_codecs.encode``, which protocol
2 uses for bytes); any other global ends the read with a :class:`~innaudit.core.errors.DataError`
before anything is called.

SPECs: a batches folder (``DIR`` or ``cifar:DIR``, test split; ``DIR:train`` for the training
batches) or one batch file (``.../data_batch_3``). Only the batch files needed for
``--samples`` images are read.
"""

from __future__ import annotations

import _codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from innaudit.core.errors import DataError, clean_text

__all__ = ["MAX_BATCH_BYTES", "BatchUnpickler", "batch_files", "is_cifar_dir", "is_cifar_file", "read_cifar"]

MAX_BATCH_BYTES = 512 << 20
"""Most bytes one batch file may hold (a CIFAR-10 batch is 31 MB, CIFAR-100's train file 155 MB)."""

_CIFAR10 = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR100 = {"train": ["train"], "test": ["test"]}


def _array_globals() -> dict[tuple[str, str], Any]:
    """The functions and classes a pickled numpy array refers to, under every name numpy 1 and 2
    pickle them by, found from numpy's own reduce output (no name is imported by string)."""
    reconstruct = np.ndarray((0,)).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.arange(2).__reduce_ex__(5)[0]
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        found[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        found[(f"{core}.multiarray", "scalar")] = scalar
        found[(f"{core}.numeric", "_frombuffer")] = frombuffer
    found[("_codecs", "encode")] = _codecs.encode
    return found


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array globals (see the module docstring)."""

    allowed = _array_globals()

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object for ``module.name``; UnpicklingError for anything else."""
        found = self.allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"global {module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        """Refused: a data batch has no persistent references."""
        raise pickle.UnpicklingError("a persistent reference")


def is_cifar_dir(path: Path) -> bool:
    """A CIFAR-10 or CIFAR-100 batches folder."""
    return path.is_dir() and ((path / "test_batch").is_file() or (path / "batches.meta").is_file() or _is_c100(path))


def _is_c100(path: Path) -> bool:
    return (path / "meta").is_file() and ((path / "test").is_file() or (path / "train").is_file())


def is_cifar_file(path: Path) -> bool:
    """One CIFAR batch file, told by its name (``data_batch_N``, ``test_batch``, or CIFAR-100's
    ``train``/``test`` beside its ``meta``)."""
    if not path.is_file():
        return False
    return path.name in (*_CIFAR10["train"], *_CIFAR10["test"]) or (
        path.name in ("train", "test") and (path.parent / "meta").is_file()
    )


def batch_files(path: Path, split: str | None) -> list[Path]:
    """The batch files of ``split`` (default test) of a batches folder, or the one file given."""
    if path.is_file():
        if split:
            raise DataError(f"{clean_text(path, 300)} is one batch file; a split (:{split}) goes with the folder")
        return [path]
    split = split or "test"
    names = (_CIFAR100 if _is_c100(path) else _CIFAR10).get(split)
    if names is None:
        raise DataError(f"CIFAR split {clean_text(split, 40)!r} is not one; expected :train or :test")
    files = [path / n for n in names if (path / n).is_file()]
    if not files:
        raise DataError(f"{clean_text(path, 300)} holds no {split} batch ({', '.join(names)})")
    return files


def _load_batch(path: Path) -> dict[Any, Any]:
    where = clean_text(path, 300)
    with path.open("rb") as handle:
        data = handle.read(MAX_BATCH_BYTES + 1)
    if len(data) > MAX_BATCH_BYTES:
        raise DataError(f"{where} holds more than {MAX_BATCH_BYTES >> 20} MiB; a CIFAR batch is far smaller")
    try:
        batch = BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{where} is not a CIFAR batch: its pickle asks for {clean_text(exc, 200)}, which a data batch "
            "never needs; refused before anything ran"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise DataError(
            f"{where} is not a readable CIFAR batch ({clean_text(f'{type(exc).__name__}: {exc}', 200)})"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{where} holds a {type(batch).__name__}; a CIFAR batch is a dict with a 'data' entry")
    return batch


def _rows(batch: dict[Any, Any], path: Path) -> np.ndarray:
    data = batch.get("data", batch.get(b"data"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{clean_text(path, 300)}: its 'data' entry is {got}; a CIFAR batch holds (N, 3072) uint8 rows")
    return data


def read_cifar(path: Path, split: str | None, limit: int) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """The first ``limit`` images of the batches as ``(n, 3, 32, 32)`` uint8 (the rows' own CHW
    order), the report's origin and the reader's step."""
    parts: list[np.ndarray] = []
    read: list[str] = []
    total = 0
    for file in batch_files(path, split):
        if total >= limit:
            break
        rows = _rows(_load_batch(file), file)[: limit - total]
        parts.append(np.array(rows))
        read.append(file.name)
        total += len(rows)
    array = np.concatenate(parts).reshape(-1, 3, 32, 32)
    origin = {"format": "cifar-python", "path": str(path), "files_read": read}
    return array, origin, ("CIFAR rows of 3072 values read as their documented (3, 32, 32) CHW layout",)
