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
from torch.overrides import TorchFunctionMode

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError, clean_text
from innaudit.safeio.preflight import clean_strings

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "allocation_guard",
    "checkpoint_bytes",
    "is_native",
    "parse_native",
    "save_checkpoint",
]

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
        path: where to write (a temporary file in the same folder is renamed onto it; a
            symlink is followed, a device or FIFO written in place).
        module: the model; its ``state_dict`` is stored.
        architecture: the zoo name that rebuilds it (``innaudit.zoo.ARCHITECTURES``).
        config: keyword arguments of that architecture (plain data only).
        domain: the data the model was trained on.
        provenance: how it was made (recipe, seed, command, versions, training metrics).
    """
    from innaudit.safeio.atomic import write_target

    target = Path(path)
    write_target(target, checkpoint_bytes(module, architecture, config, domain, provenance))
    return target


def is_native(obj: object) -> bool:
    """True when a safely loaded object is an innaudit native checkpoint."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def parse_native(
    obj: Mapping[str, Any], max_bytes: int | None = None
) -> tuple[nn.Module, str, DataDomain, dict[str, Any]]:
    """Rebuild the model of a loaded native checkpoint.

    The stored config is checked against the architecture's declared ranges
    (:func:`innaudit.zoo.check_config`), and the model is built under :func:`allocation_guard`
    with a budget derived from the stored weights (twice their bytes plus 64 MiB, and never
    more than ``max_bytes``): a config that asks for far more memory than the weights it came
    with (``hidden: 8000`` beside 8-wide tensors) is refused before the allocation, instead of
    allocating gigabytes for the shape check to fail afterwards.

    Returns:
        ``(module, architecture name, domain, provenance)`` with the weights loaded strictly.
    """
    from innaudit import zoo

    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise LoadError(
            f"native checkpoint format_version {version!r} is not supported; "
            f"this innaudit reads version {FORMAT_VERSION}"
        )
    arch = obj.get("architecture")
    state = obj.get("state_dict")
    if not isinstance(arch, dict) or not isinstance(state, dict):
        raise LoadError(
            "native checkpoint lacks an 'architecture' or 'state_dict' entry; "
            "it was not written by innaudit.save_checkpoint"
        )
    name, config = clean_text(arch.get("name"), 100), arch.get("config") or {}
    if not isinstance(config, dict):
        raise LoadError(f"native checkpoint config is {type(config).__name__}; expected a dict")
    stored = sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
    budget = 2 * stored + (64 << 20)
    with allocation_guard(min(budget, max_bytes or budget), name):
        module = zoo.build(name, config)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise LoadError(f"the weights do not fit architecture {name!r}: {clean_text(exc, 300)}") from None
    domain = DataDomain.from_dict(obj.get("data") or {})
    provenance = obj.get("provenance") if isinstance(obj.get("provenance"), dict) else {}
    return module, name, domain, clean_strings(provenance)


_FACTORIES = {
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
    torch.eye,
    torch.arange,
    torch.empty_strided,
    torch.normal,
}
_NEW = {"new_empty", "new_zeros", "new_ones", "new_full"}


def _requested(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """Bytes a factory call is about to allocate (0 when it is not a factory or unknown)."""
    name = getattr(func, "__name__", "")
    if func not in _FACTORIES and name not in _NEW:
        return 0
    rest = args[1:] if name in _NEW else args
    if func is torch.randint:
        rest = tuple(a for a in args if isinstance(a, (tuple, list, torch.Size)))[:1]
    elif func is torch.arange:
        ends = [float(a) for a in args[:3] if isinstance(a, (int, float))]
        span = ends[0] if len(ends) == 1 else (ends[1] - ends[0]) / (ends[2] if len(ends) > 2 and ends[2] else 1)
        rest = (int(abs(span)) + 1,) if ends else ()
    if func is torch.eye:
        sides = [a for a in args[:2] if isinstance(a, int)]
        rest = (sides[0], sides[-1]) if sides else ()
    dims: Any = kwargs.get(
        "size",
        rest[0] if rest and isinstance(rest[0], (tuple, list, torch.Size)) else [a for a in rest if isinstance(a, int)],
    )
    numel = 1
    for d in dims if isinstance(dims, (tuple, list, torch.Size)) else (dims,):  # full(size, value)
        numel *= int(d) if isinstance(d, int) and d > 0 else 1
    dtype = kwargs.get("dtype") or torch.get_default_dtype()
    return numel * (dtype.itemsize if isinstance(dtype, torch.dtype) else 8)


class _Guard(TorchFunctionMode):
    """Counts the bytes torch factory calls ask for and refuses the one that crosses the budget."""

    def __init__(self, limit: int, name: str) -> None:
        super().__init__()
        self.limit, self.name, self.used = limit, name, 0

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        self.used += _requested(func, args, kwargs)
        if self.used > self.limit:
            raise LoadError(
                f"architecture {self.name!r}: its stored config asks for more than "
                f"{self.limit / (1 << 20):.0f} MiB while it is built, more than its stored "
                "weights or the memory budget allow; the checkpoint is damaged or hostile"
            )
        return func(*args, **kwargs)


def allocation_guard(limit: int, name: str) -> TorchFunctionMode:
    """A torch function mode under which factory calls (``torch.empty``, ``randn``, ``eye``,
    ``Tensor.new_zeros``...) may allocate at most ``limit`` bytes in all; the call that would
    cross it raises LoadError before anything is allocated."""
    return _Guard(limit, name)
