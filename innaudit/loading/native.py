"""innaudit's own checkpoint format: self-describing and loadable with ``weights_only=True``.

A native checkpoint is a ``torch.save``-d dict of plain data and tensors only::

    {
      "format": "innaudit.checkpoint", "format_version": 1,
      "architecture": {"name": "coupling-image", "config": {...}},   # zoo.build(name, config)
      "state_dict": {"...": Tensor, ...},
      "data": {"shape": [1, 8, 8], "low": 0.0, "high": 1.0, "levels": 17, "name": "digits"},
      "provenance": {"recipe": ..., "seed": ..., "command": ..., "torch": ..., ...},
    }

so it needs no other argument to be audited and no code to be unpickled.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..domain import DataDomain
from ..errors import LoadError, clean_text
from ..safeio.preflight import clean_strings

__all__ = ["FORMAT", "FORMAT_VERSION", "checkpoint_bytes", "is_native", "parse_native", "save_checkpoint"]

FORMAT = "innaudit.checkpoint"
FORMAT_VERSION = 1


def checkpoint_bytes(
    module: nn.Module,
    architecture: str,
    config: Mapping[str, Any],
    domain: DataDomain,
    provenance: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialize a zoo model to native-checkpoint bytes (see the module docstring)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {"name": architecture, "config": dict(config)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "data": domain.to_dict(),
        "provenance": dict(provenance or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(
    path: str | os.PathLike[str],
    module: nn.Module,
    architecture: str,
    config: Mapping[str, Any],
    domain: DataDomain,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a native checkpoint of a zoo model to ``path`` atomically and return the path.

    Args:
        path: where to write (a temporary file in the same folder is renamed onto it).
        module: the model; its ``state_dict`` is stored.
        architecture: the zoo name that rebuilds it (``innaudit.zoo.ARCHITECTURES``).
        config: keyword arguments of that architecture (plain data only).
        domain: the data the model was trained on.
        provenance: how it was made (recipe, seed, command, versions, training metrics).
    """
    from ..atomic import write_atomic

    target = Path(path)
    write_atomic(target, checkpoint_bytes(module, architecture, config, domain, provenance))
    return target


def is_native(obj: object) -> bool:
    """True when a safely loaded object is an innaudit native checkpoint."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def parse_native(obj: Mapping[str, Any]) -> tuple[nn.Module, str, DataDomain, dict[str, Any]]:
    """Rebuild the model of a loaded native checkpoint.

    Returns:
        ``(module, architecture name, domain, provenance)`` with the weights loaded strictly.
    """
    from .. import zoo

    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise LoadError(f"native checkpoint format_version {version!r} is not supported; "
                        f"this innaudit reads version {FORMAT_VERSION}")
    arch = obj.get("architecture")
    state = obj.get("state_dict")
    if not isinstance(arch, dict) or not isinstance(state, dict):
        raise LoadError("native checkpoint lacks an 'architecture' or 'state_dict' entry; "
                        "it was not written by innaudit.save_checkpoint")
    name, config = clean_text(arch.get("name"), 100), arch.get("config") or {}
    if not isinstance(config, dict):
        raise LoadError(f"native checkpoint config is {type(config).__name__}; expected a dict")
    module = zoo.build(name, config)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise LoadError(f"the weights do not fit architecture {name!r}: {clean_text(exc, 300)}") from None
    domain = DataDomain.from_dict(obj.get("data") or {})
    provenance = obj.get("provenance") if isinstance(obj.get("provenance"), dict) else {}
    return module, name, domain, clean_strings(provenance)
