"""Which reader a data SPEC names: image folders, CIFAR batches, SVHN ``.mat``, Parquet and tar
shards (the array files ``.npy/.npz/.pt/.t7`` are :mod:`innaudit.safeio.arrays`).

=========================================  ==============================  =======================
SPEC                                       reader                          needs
=========================================  ==============================  =======================
``folder:DIR`` or a folder of images       :mod:`~innaudit.data.images`    Pillow
``cifar:DIR``, a CIFAR batches folder      :mod:`~innaudit.data.cifar`     (nothing)
(``DIR:train`` / ``DIR:test``), or one
batch file (``data_batch_1``)
``x.mat[:NAME]`` (SVHN, MATLAB level 5)    :mod:`~innaudit.data.matlab`    (nothing)
``x.parquet[:COLUMN]``,                    :mod:`~innaudit.data.shards`    pyarrow, Pillow
``parquet:DIR[:COLUMN]``, a folder of
``.parquet`` shards
``x.tar`` / ``.tar.gz`` / ``.tgz``,        :mod:`~innaudit.data.shards`    Pillow
``tar:DIR``, a folder of tar shards
=========================================  ==============================  =======================

Pillow and pyarrow come with ``pip install 'innaudit[formats]'``; a SPEC whose reader's package
is missing says so. A folder is told apart by what it holds: CIFAR's batch files first, then
Parquet shards, then tar shards, else images. ``:KEY`` after a path that exists whole is part
of the path, not a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError, clean_text
from innaudit.safeio.arrays import FILE_SUFFIXES

__all__ = ["FORMATS", "Read", "match_format"]


@dataclass(frozen=True)
class Read:
    """What a reader returns: at most ``--samples`` samples and what the report says of them."""

    array: np.ndarray
    origin: dict[str, Any]
    transform: tuple[str, ...]
    layout: str | None


Reader = Callable[[Path, "str | None", int, DataDomain, str], Read]


def _folder(path: Path, key: str | None, limit: int, domain: DataDomain, spec: str) -> Read:
    from innaudit.data.images import folder_images

    _no_key(key, spec)
    array, origin, steps = folder_images(path, limit, domain, spec)
    return Read(array, origin, steps, "hwc")


def _cifar(path: Path, key: str | None, limit: int, domain: DataDomain, spec: str) -> Read:
    from innaudit.data.cifar import read_cifar

    array, origin, steps = read_cifar(path, key, limit)
    return Read(array, origin, steps, "chw")


def _mat(path: Path, key: str | None, limit: int, domain: DataDomain, spec: str) -> Read:
    from innaudit.data.matlab import read_mat

    array, origin, steps = read_mat(path, key, limit)
    return Read(array, origin, steps, "hwc" if array.ndim == 4 else None)


def _parquet(path: Path, key: str | None, limit: int, domain: DataDomain, spec: str) -> Read:
    from innaudit.data.shards import read_parquet

    array, origin, steps = read_parquet(path, key, limit, domain, spec)
    return Read(array, origin, steps, "hwc")


def _tar(path: Path, key: str | None, limit: int, domain: DataDomain, spec: str) -> Read:
    from innaudit.data.shards import read_tar

    _no_key(key, spec)
    array, origin, steps = read_tar(path, limit, domain, spec)
    return Read(array, origin, steps, "hwc")


def _no_key(key: str | None, spec: str) -> None:
    if key is not None:
        raise DataError(f"data SPEC {clean_text(spec, 200)!r}: ':{clean_text(key, 40)}' names no path that exists")


FORMATS: dict[str, Reader] = {"folder": _folder, "cifar": _cifar, "mat": _mat, "parquet": _parquet, "tar": _tar}


def _split_key(text: str) -> tuple[Path, str | None]:
    """``PATH[:KEY]``: the whole text when it exists as a path, else the part before the last ``:``."""
    if Path(text).exists() or ":" not in text:
        return Path(text), None
    head, _, key = text.rpartition(":")
    return Path(head), key or None


def _folder_kind(path: Path) -> str:
    from innaudit.data.cifar import is_cifar_dir

    if is_cifar_dir(path):
        return "cifar"
    try:
        names = [p.name.lower() for p in path.iterdir()]
    except OSError as exc:
        raise DataError(f"folder {clean_text(path, 300)} cannot be listed ({clean_text(exc.strerror, 80)})") from None
    if any(n.endswith(".parquet") for n in names):
        return "parquet"
    if any(n.endswith((".tar", ".tar.gz", ".tgz")) for n in names):
        return "tar"
    return "folder"


def _by_path(path: Path) -> str | None:
    from innaudit.data.cifar import is_cifar_file

    name = path.name.lower()
    if name.endswith(FILE_SUFFIXES):
        return None  # an array file, even when the path is a folder (it is refused as one)
    if name.endswith(".mat"):
        return "mat"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if path.is_dir():
        return _folder_kind(path)
    if is_cifar_file(path):
        return "cifar"
    return None


def match_format(spec: str) -> tuple[Reader, Path, str | None] | None:
    """``(reader, path, key)`` when ``spec`` names one of the formats above, else None.

    Raises:
        DataError: a ``FORMAT:`` prefix whose path does not exist.
    """
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in FORMATS and prefix != "mat":
        path, key = _split_key(rest)
        if not path.exists():
            raise DataError(f"data SPEC {clean_text(spec, 200)!r}: {clean_text(path, 300)!r} does not exist")
        return FORMATS[prefix], path, key
    path, key = _split_key(spec)
    kind = _by_path(path)
    if kind is None:
        return None
    if not path.exists():
        raise DataError(f"data file {clean_text(path, 300)!r} does not exist")
    return FORMATS[kind], path, key
