"""Sharded weights: ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``.

The Hugging Face layout: an index ``{"metadata": {...}, "weight_map": {tensor name: shard file}}``
beside its shards. ``--weights DIR/model.safetensors.index.json`` reads every shard the map
names, each through the same checked readers as one weights file (safetensors' header checks,
or the weights-only loader), and joins them. Refused with one line: an index over
:data:`MAX_INDEX_BYTES` or not of that shape; a shard name that is not a plain file name in the
index's folder (``../x``, ``/etc/x``); more than :data:`MAX_SHARDS` shards; a tensor in two
shards, a tensor the map names that its shard lacks, or one it holds that the map does not
name; shards whose sizes add up to more than the memory budget.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from innaudit.core.errors import LoadError, clean_text
from innaudit.safeio.checkpoint import CheckpointFile, read_checkpoint
from innaudit.safeio.preflight import Limits

__all__ = ["MAX_INDEX_BYTES", "MAX_SHARDS", "is_index", "read_sharded"]

MAX_INDEX_BYTES = 16 << 20
MAX_SHARDS = 10_000


def is_index(path: Path) -> bool:
    """True for a shard index file (``*.index.json``)."""
    return path.name.endswith(".index.json")


def _weight_map(path: Path) -> tuple[dict[str, str], bytes]:
    where = clean_text(path, 300)
    if not path.is_file():
        raise LoadError(f"weights index {where!r} does not exist or is not a regular file")
    with path.open("rb") as handle:
        raw = handle.read(MAX_INDEX_BYTES + 1)
    if len(raw) > MAX_INDEX_BYTES:
        raise LoadError(f"{where} is larger than {MAX_INDEX_BYTES >> 20} MiB; a shard index is far smaller")
    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LoadError(f"{where} is not JSON ({clean_text(exc, 200)}); expected a shard index") from None
    mapping = index.get("weight_map") if isinstance(index, dict) else None
    if (
        not isinstance(mapping, dict)
        or not mapping
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
    ):
        raise LoadError(f"{where} has no weight_map of tensor names to shard files; expected a shard index")
    return mapping, raw


def _shard_path(folder: Path, name: str, where: str) -> Path:
    if not name or name != Path(name).name or name in (".", "..") or "\\" in name or "\x00" in name:
        raise LoadError(
            f"{where} names shard {clean_text(name, 200)!r}, not a plain file name beside the index; refused"
        )
    return folder / name


def read_sharded(
    path: Path, limits: Limits | None, read: Callable[[CheckpointFile, Limits | None], Any]
) -> tuple[dict[str, Any], str, list[dict[str, str]]]:
    """The tensors of every shard joined, a sha256 over the index and the shards' digests, and
    each shard's name and sha256 for the report."""
    where = clean_text(path, 300)
    mapping, raw = _weight_map(path)
    names = sorted(set(mapping.values()))
    if len(names) > MAX_SHARDS:
        raise LoadError(f"{where} names {len(names)} shards; at most {MAX_SHARDS} are read")
    budget = (limits or Limits()).max_bytes
    files = [_shard_path(path.parent, n, where) for n in names]
    total = sum(f.stat().st_size for f in files if f.is_file())
    if total > budget:
        raise LoadError(f"{where}: its shards hold {total} bytes, over the {budget}-byte budget; raise --max-memory")
    joined: dict[str, Any] = {}
    digest = hashlib.sha256(raw)
    shards = []
    for name, file in zip(names, files, strict=True):
        ckpt = read_checkpoint(file, limits)
        tensors = read(ckpt, limits)
        if not isinstance(tensors, dict):
            raise LoadError(f"shard {clean_text(file, 300)} holds a {type(tensors).__name__}; expected tensors by name")
        expected = {k for k, v in mapping.items() if v == name}
        if set(tensors) != expected:
            odd = sorted(set(tensors) ^ expected)[:5]
            raise LoadError(
                f"shard {clean_text(file, 300)} does not hold what {where} maps to it (differs on {clean_text(odd, 200)})"
            )
        twice = sorted(set(tensors) & set(joined))[:5]
        if twice:
            raise LoadError(f"{where}: tensors {clean_text(twice, 200)} appear in more than one shard")
        joined.update(tensors)
        digest.update(ckpt.sha256.encode())
        shards.append({"file": name, "sha256": ckpt.sha256})
    return joined, digest.hexdigest(), shards
