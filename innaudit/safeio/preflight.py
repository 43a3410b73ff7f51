"""Checks on an untrusted checkpoint before its tensors are allocated.

``torch.load`` checks neither zip CRCs nor how much memory a file will claim, and a loaded
structure can be built to defeat naive walks.
Before the real load innaudit therefore:

1. for a zip checkpoint, bounds the entry count and the declared uncompressed size, refuses
   compressed records beyond the budget (``torch.save`` stores records uncompressed, so a
   compressed one was rewritten by someone, possibly as a zip bomb) and checks every CRC
   (all-zero CRCs mean "not recorded", which is not an error);
2. loads the file once onto the ``meta`` device (no tensor data is read) and walks the result
   iteratively, with a visited set and caps on nodes and depth, summing the *logical* size of
   every tensor (a stride-0 view can claim 1e9 elements over 16 bytes of storage);
3. refuses over-budget files with a one-line error instead of running out of memory.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from innaudit.core.errors import CorruptCheckpointError, LoadError, clean_text

__all__ = ["Limits", "check_structure", "check_zip", "clean_strings"]


@dataclass(frozen=True)
class Limits:
    """Budgets for one checkpoint file."""

    max_bytes: int = 4 << 30
    max_entries: int = 100_000
    max_nodes: int = 1_000_000
    max_depth: int = 200


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def check_zip(source: Path | IO[bytes], limits: Limits, path: Path | None = None) -> None:
    """Entry count, declared sizes, compression and CRCs of a zip checkpoint.

    ``source`` is the file or a stream of its bytes; ``path`` names it in messages.
    """
    path = path or (source if isinstance(source, Path) else Path("<checkpoint>"))
    try:
        with zipfile.ZipFile(source) as archive:
            entries = archive.infolist()
            if len(entries) > limits.max_entries:
                raise LoadError(f"{path} has {len(entries)} zip entries; at most {limits.max_entries} are accepted")
            declared = sum(e.file_size for e in entries)
            if declared > limits.max_bytes:
                raise LoadError(
                    f"{path} declares {_mib(declared)} of content, over the "
                    f"{_mib(limits.max_bytes)} budget; raise --max-memory if it is genuine"
                )
            packed = [e for e in entries if e.compress_type != zipfile.ZIP_STORED]
            if packed and sum(e.file_size for e in packed) > max(1 << 20, limits.max_bytes // 64):
                raise LoadError(
                    f"{path} holds compressed records ({clean_text(packed[0].filename, 80)}, "
                    "...) that expand far beyond their size; torch.save never compresses, "
                    "so the file was rewritten: refused as a possible zip bomb"
                )
            _check_crcs(path, archive, entries)
    except LoadError:
        raise
    except Exception as exc:  # zipfile raises BadZipFile, OSError, zlib.error... on damage
        raise CorruptCheckpointError(
            f"{path} is a damaged zip archive ({type(exc).__name__}: "
            f"{clean_text(exc, 120)}); the file is truncated or corrupt"
        ) from None


def _check_crcs(path: Path, archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo]) -> None:
    if all(e.CRC == 0 for e in entries if e.file_size):
        return  # saved without CRCs (torch.serialization.set_crc32_options(False))
    bad = archive.testzip()
    if bad is not None:
        raise CorruptCheckpointError(
            f"{path}: the CRC of entry {clean_text(bad, 120)} does not match "
            "its data; the file is corrupted or was tampered with"
        )


def check_structure(obj: Any, limits: Limits, path: Path) -> None:
    """Walk a meta-device load iteratively; refuse bombs, stride-0 views, over-budget tensors."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(obj, 0)]
    total = 0
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > limits.max_nodes or depth > limits.max_depth:
            raise LoadError(
                f"{path} holds a structure beyond the limits ({limits.max_nodes} objects, "
                f"depth {limits.max_depth}); refused as a structure bomb"
            )
        if isinstance(node, torch.Tensor):
            total += _tensor_bytes(node, path)
            if total > limits.max_bytes:
                raise LoadError(
                    f"{path} declares tensors of more than {_mib(limits.max_bytes)}; "
                    "raise --max-memory if the checkpoint is genuinely that large"
                )
        elif isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node if not isinstance(k, (str, int)))
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in node)


def _tensor_bytes(t: torch.Tensor, path: Path) -> int:
    if t.layout != torch.strided:
        raise LoadError(
            f"{path} holds a {str(t.layout).removeprefix('torch.')} tensor of shape "
            f"{tuple(t.shape)}; innaudit reads dense tensors only (call .to_dense() "
            "before torch.save)"
        )
    logical = t.numel() * t.element_size()
    if t.numel() > 1 and any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape, strict=False)):
        raise LoadError(
            f"{path} holds a stride-0 tensor of shape {tuple(t.shape)} over "
            f"{t.untyped_storage().nbytes()} bytes of storage; torch.save of parameters "
            "never writes one, so the file was crafted"
        )
    return logical


def clean_strings(obj: Any, limit: int = 10_000) -> Any:
    """A copy of plain data read from a file with control characters stripped from every string.

    Bounded: at most ``limit`` nodes are copied; anything deeper or larger is dropped.
    """
    budget = [limit]

    def clean(node: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0 or depth > 32:
            return None
        if isinstance(node, str):
            return clean_text(node, 500)
        if isinstance(node, Mapping):
            return {clean_text(k, 100): clean(v, depth + 1) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [clean(v, depth + 1) for v in node]
        if isinstance(node, (int, float, bool)) or node is None:
            return node
        return clean_text(type(node).__name__, 100)

    return clean(obj, 0)
