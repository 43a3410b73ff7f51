"""What a repair writes: a native checkpoint for a native model, a state dict for a factory's.

- A native checkpoint becomes a native checkpoint of architecture ``repaired``
  (:mod:`innaudit.zoo.repaired`): the original architecture and config under ``base``, the
  bounded scales (``scale_clamp``) and the float64 inverses (``inverse_float64``) beside it, the
  fine-tuned weights, the same data domain, and a provenance that records the remedies, their
  parameters and the source's sha256. ``innaudit run fixed.pt`` needs no other argument.
- A factory model (FrEIA, normflows, nflows, zuko, a plain module) gets its state dict, which
  loads back into the same factory with ``--weights``; a bounded scale is then applied in the
  factory with :func:`innaudit.remedies.bound_scales` and the bounds the report lists.

Both are plain ``torch.save`` bytes of tensors and plain data (``weights_only=True`` loads them),
with no wall time or output path inside: the same inputs and seed give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.native import checkpoint_bytes, is_native, parse_native
from innaudit.safeio.checkpoint import load_weights_only, read_checkpoint

__all__ = ["NativeSource", "native_bytes", "parse_bytes", "read_native", "state_dict_bytes"]

REPAIRED = "repaired"


@dataclass(frozen=True)
class NativeSource:
    """The native checkpoint a repair starts from."""

    architecture: str
    config: Mapping[str, Any]
    domain: DataDomain
    provenance: Mapping[str, Any]
    sha256: str


def read_native(path: str | Path) -> NativeSource | None:
    """The native checkpoint at ``path`` (None when the file is another kind of checkpoint)."""
    ckpt = read_checkpoint(Path(path))
    obj = load_weights_only(ckpt)
    if not is_native(obj):
        return None
    _, name, domain, provenance = parse_native(obj)
    config = obj["architecture"].get("config") or {}
    return NativeSource(name, dict(config), domain, provenance, ckpt.sha256)


def _base(source: NativeSource) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """The original architecture, and the remedies an earlier repair already applied."""
    if source.architecture != REPAIRED:
        return {"name": source.architecture, "config": dict(source.config)}, {}, []
    config = source.config
    return (
        dict(config["base"]),
        dict(config.get("scale_clamp") or {}),
        list(config.get("inverse_float64") or []),
    )


def native_bytes(
    module: nn.Module,
    source: NativeSource,
    clamps: Mapping[str, float],
    float64_blocks: Sequence[str],
    provenance: Mapping[str, Any],
) -> bytes:
    """A native ``repaired`` checkpoint of ``module`` (see the module docstring)."""
    base, earlier_clamps, earlier_blocks = _base(source)
    config: dict[str, Any] = {"base": base}
    merged = {**earlier_clamps, **clamps}
    if merged:
        config["scale_clamp"] = dict(sorted(merged.items()))
    blocks = sorted(set(earlier_blocks) | set(float64_blocks))
    if blocks:
        config["inverse_float64"] = blocks
    return checkpoint_bytes(module, REPAIRED, config, source.domain, provenance)


def state_dict_bytes(module: nn.Module) -> bytes:
    """``torch.save`` of the module's state dict (CPU tensors, contiguous copies)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}, buffer)
    return buffer.getvalue()


def parse_bytes(data: bytes) -> Any:
    """Load bytes a repair wrote, with ``weights_only=True``."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # our own bytes: a failure here is a bug worth a clear line
        raise LoadError(f"the repaired checkpoint does not load back: {type(exc).__name__}: {exc}") from None
