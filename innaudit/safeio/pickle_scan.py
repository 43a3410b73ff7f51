"""List the globals a pickle stream asks for, without running it.

``torch.serialization.get_unsafe_globals_in_checkpoint`` reads only zip checkpoints; raw pickles
and the legacy format are scanned here with :mod:`pickletools`, which decodes opcodes and
executes nothing. The scan is bounded (opcode count), so a crafted file cannot stall it.
"""

from __future__ import annotations

import pickletools
from contextlib import nullcontext
from pathlib import Path
from typing import IO, cast

__all__ = ["SAFE_PREFIXES", "scan_globals", "unsafe_globals"]

SAFE_PREFIXES = (
    "torch.",
    "collections.OrderedDict",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.slice",
    "builtins.complex",
)
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_MEMO_PUT = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


def scan_globals(source: Path | IO[bytes], max_ops: int = 2_000_000) -> list[str]:
    """Every ``module.name`` global referenced by the pickles in ``source`` (a path or a binary
    stream), in order, unique.

    The legacy torch format is several pickles in a row, so the scan goes on after each STOP.
    Decoding stops silently at the first malformed opcode: what was found so far is returned.
    """
    found: list[str] = []
    with source.open("rb") if isinstance(source, Path) else nullcontext(source) as handle:
        ops = 0
        while ops < max_ops:
            start = handle.tell()
            try:
                ops += _scan_one(handle, found, max_ops - ops)
            except Exception:
                break
            if handle.tell() == start:
                break
    return list(dict.fromkeys(found))


def _scan_one(handle: IO[bytes], found: list[str], budget: int) -> int:
    memo: dict[int, str] = {}
    recent: list[str] = []
    count = 0
    for opcode, arg, _ in pickletools.genops(handle):
        count += 1
        name = opcode.name
        if name in ("GLOBAL", "INST") and isinstance(arg, str):
            found.append(arg.replace(" ", "."))
        elif name == "STACK_GLOBAL" and len(recent) >= 2:
            found.append(f"{recent[-2]}.{recent[-1]}")
        if name in _STRINGS and isinstance(arg, (str, bytes)):
            recent.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
        elif name in _MEMO_PUT and recent:
            memo[len(memo) if name == "MEMOIZE" else int(cast(int, arg))] = recent[-1]
        elif name in _MEMO_GET and int(cast(int, arg)) in memo:
            recent.append(memo[int(cast(int, arg))])
        if count >= budget:
            break
    return count


def unsafe_globals(source: Path | IO[bytes]) -> list[str]:
    """The globals of ``source`` outside the tensor-rebuilding set the weights-only loader allows."""
    return [g for g in scan_globals(source) if not g.startswith(SAFE_PREFIXES)]
