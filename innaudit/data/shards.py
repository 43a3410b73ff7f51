"""Sharded image data sets: Parquet shards with an image-bytes column (the Hugging Face layout)
and webdataset-style ``.tar`` shards.

Parquet (``x.parquet[:COLUMN]``, ``parquet:DIR[:COLUMN]``; pyarrow): the column is the one
named, else the only image column found: a struct with a binary ``bytes`` field (the
``datasets`` ``Image`` feature, ``{bytes, path}``) or a binary column. Shards are read in name
order, one row group at a time, and only until ``--samples`` images are decoded; a row group
whose image column declares more than :data:`MAX_GROUP_BYTES` uncompressed bytes is refused
before it is read. A row with no bytes (an image given by path only) is refused: the data set
must carry its pixels.

Tar (``x.tar``, ``.tar.gz``, ``.tgz``, ``tar:DIR``; stdlib ``tarfile``, read as a stream): the
members sharing a basename form a sample (``000017.jpg``, ``000017.cls``), and the first image
member of each sample is its image; other members (labels, JSON) are skipped unread. Refused,
with the shard and member named, before anything else happens: a member name that is absolute
or climbs out (``..``), a link, device or FIFO member, a member larger than
:data:`~innaudit.data.images.MAX_IMAGE_BYTES`, and a member whose extension webdataset decodes
with pickle or ``torch.load`` (``.pyd``, ``.pickle``, ``.pkl``, ``.pth``, ``.pt``, ``.ckpt``):
innaudit decodes only images, so such a member is a sign of a shard it should not trust.
Nothing is ever extracted to disk.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError, clean_text
from innaudit.data.images import IMAGE_SUFFIXES, MAX_IMAGE_BYTES, DecodedImages, image_target

__all__ = ["MAX_GROUP_BYTES", "MAX_SHARDS", "PICKLE_SUFFIXES", "read_parquet", "read_tar", "shard_files"]

MAX_GROUP_BYTES = 1 << 30
"""Most uncompressed bytes the image column of one Parquet row group may declare."""
MAX_SHARDS = 100_000
"""Most shard files a folder SPEC may list."""
PICKLE_SUFFIXES = (".pyd", ".pickle", ".pkl", ".pth", ".pt", ".ckpt")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def shard_files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """``path`` itself, or the files of folder ``path`` ending in ``suffixes``, sorted."""
    if path.is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if p.name.lower().endswith(suffixes) and p.is_file())
    if not found:
        raise DataError(f"folder {clean_text(path, 300)} holds no {'/'.join(suffixes)} shard")
    if len(found) > MAX_SHARDS:
        raise DataError(f"folder {clean_text(path, 300)} holds {len(found)} shards; at most {MAX_SHARDS} are listed")
    return found


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet shards needs pyarrow, which is not installed; install it with: "
            "pip install 'innaudit[formats]' (or pip install pyarrow)"
        ) from None
    return pq


def _image_columns(schema: Any) -> list[str]:
    import pyarrow as pa

    names = []
    for field in schema:
        kind = field.type
        struct = pa.types.is_struct(kind) and any(
            kind.field(i).name == "bytes" and pa.types.is_binary(kind.field(i).type) for i in range(kind.num_fields)
        )
        if struct or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            names.append(field.name)
    return names


def _column(schema: Any, key: str | None, where: str) -> str:
    found = _image_columns(schema)
    if key is not None:
        if key not in schema.names:
            raise DataError(
                f"{where} has no column {clean_text(key, 80)!r}; columns: {clean_text(', '.join(schema.names), 300)}"
            )
        if key not in found:
            raise DataError(
                f"{where}: column {clean_text(key, 80)!r} holds no image bytes (a binary or {{bytes, path}} column)"
            )
        return key
    if len(found) == 1:
        return found[0]
    what = "several image columns" if found else "no image column (binary, or a struct with a binary 'bytes' field)"
    raise DataError(
        f"{where} has {what}; name one as FILE.parquet:COLUMN, columns: {clean_text(', '.join(schema.names), 300)}"
    )


def _values(batch: Any, column: str) -> list[bytes | None]:
    values = batch.column(column)
    if hasattr(values.type, "num_fields"):
        values = values.field("bytes")
    return values.to_pylist()


def _parquet_rows(pq: Any, file: Path, key: str | None) -> Iterator[tuple[int, bytes | None]]:
    where = clean_text(file, 300)
    handle = pq.ParquetFile(file)
    column = _column(handle.schema_arrow, key, where)
    index = handle.schema_arrow.get_field_index(column)
    row = 0
    for group in range(handle.num_row_groups):
        meta = handle.metadata.row_group(group)
        declared = sum(
            meta.column(i).total_uncompressed_size
            for i in range(meta.num_columns)
            if meta.column(i).path_in_schema.split(".")[0] == column
        )
        if declared > MAX_GROUP_BYTES:
            raise DataError(
                f"{where}: row group {group} declares {declared} uncompressed bytes of images; at most "
                f"{MAX_GROUP_BYTES >> 20} MiB per row group are read"
            )
        for batch in handle.iter_batches(batch_size=64, row_groups=[group], columns=[handle.schema_arrow.names[index]]):
            for value in _values(batch, column):
                yield row, value
                row += 1


def read_parquet(
    path: Path, key: str | None, limit: int, domain: DataDomain, spec: str
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """The first ``limit`` images of the shards (module docstring) as ``(n, H, W, C)`` uint8."""
    pq = _pyarrow()
    import pyarrow as pa

    decoded = DecodedImages(image_target(domain, spec))
    read: list[str] = []
    for file in shard_files(path, (".parquet",)):
        if len(decoded.images) >= limit:
            break
        read.append(file.name)
        try:
            for row, value in _parquet_rows(pq, file, key):
                if len(decoded.images) >= limit:
                    break
                where = f"{clean_text(file, 300)} row {row}"
                if value is None:
                    raise DataError(
                        f"{where} has no image bytes (an image given by path only); the data set must hold its pixels"
                    )
                decoded.add(value, where)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"{clean_text(file, 300)} is not a readable Parquet shard ({clean_text(f'{type(exc).__name__}: {exc}', 200)})"
            ) from None
    array = decoded.array(f"Parquet data {clean_text(path, 300)}")
    return (
        array,
        {"format": "parquet", "path": str(path), "files_read": read, "rows_read": len(array)},
        decoded.transform(),
    )


def _member_check(member: tarfile.TarInfo, where: str) -> str | None:
    """The member's lower-case extension when it is an image to decode, None to skip it;
    raises for a member innaudit refuses (module docstring)."""
    name = member.name
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith(("/", "\\"))
        or "\x00" in name
        or ".." in parts
        or ":" in (parts[0] if parts else "")
    ):
        raise DataError(f"{where}: member {clean_text(name, 200)!r} names a path outside the shard; refused")
    if member.isdir():
        return None
    if not member.isfile():
        raise DataError(
            f"{where}: member {clean_text(name, 200)!r} is a link, device or FIFO; a data shard holds files only"
        )
    base = PurePosixPath(name).name.lower()
    if base.endswith(PICKLE_SUFFIXES):
        raise DataError(
            f"{where}: member {clean_text(name, 200)!r} would be decoded with pickle or torch.load; innaudit "
            "reads only image members and refuses shards carrying pickles"
        )
    if member.size > MAX_IMAGE_BYTES and base.endswith(IMAGE_SUFFIXES):
        raise DataError(
            f"{where}: member {clean_text(name, 200)!r} holds {member.size} bytes; an image may hold at most {MAX_IMAGE_BYTES >> 20} MiB"
        )
    return base if base.endswith(IMAGE_SUFFIXES) else None


def _tar_images(file: Path) -> Iterator[tuple[str, bytes]]:
    where = clean_text(file, 300)
    seen: set[str] = set()
    with tarfile.open(file, mode="r|*") as archive:
        for member in archive:
            if _member_check(member, where) is None:
                continue
            key = str(PurePosixPath(member.name).parent / PurePosixPath(member.name).name.split(".")[0])
            if key in seen:
                continue
            seen.add(key)
            stream = archive.extractfile(member)
            if stream is None:
                continue
            data = stream.read(MAX_IMAGE_BYTES + 1)
            if len(data) != member.size:
                raise DataError(f"{where}: member {clean_text(member.name, 200)!r} is truncated")
            yield f"{where}:{clean_text(member.name, 200)}", data


def read_tar(
    path: Path, limit: int, domain: DataDomain, spec: str
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """The first ``limit`` sample images of the tar shards (module docstring), ``(n, H, W, C)``."""
    decoded = DecodedImages(image_target(domain, spec))
    read: list[str] = []
    for file in shard_files(path, TAR_SUFFIXES):
        if len(decoded.images) >= limit:
            break
        read.append(file.name)
        try:
            for where, data in _tar_images(file):
                if len(decoded.images) >= limit:
                    break
                decoded.add(data, where)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(
                f"{clean_text(file, 300)} is not a readable tar shard ({clean_text(f'{type(exc).__name__}: {exc}', 200)})"
            ) from None
    array = decoded.array(f"tar data {clean_text(path, 300)}")
    return (
        array,
        {"format": "tar", "path": str(path), "files_read": read, "images_read": len(array)},
        decoded.transform(),
    )
