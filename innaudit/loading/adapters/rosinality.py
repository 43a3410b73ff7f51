"""The rosinality glow-pytorch convention, copied by many Glow forks.

A model in this convention has ``forward(x) -> (log_p, logdet, z_outs)`` with ``z_outs`` the
list of latents, one per level, in data -> latent order (``z_outs[0]`` is factored out first,
at the finest scale), and ``reverse(z_list, reconstruct=...)``. ``reconstruct=True`` is the
exact inverse of ``forward`` (each level's factored-out half is taken as given);
``reconstruct=False`` reads the list as standard-normal noise to be scaled by the learned
per-level priors, which is sampling, not inversion. The adapter uses ``reconstruct=True``.
It is recognized from ``reverse`` taking a ``reconstruct`` argument, no library import.

Blocks: when the model keeps its levels in ``blocks`` (modules with ``forward(h) -> (out,
logdet, log_p, z_new)`` and ``reverse(out, eps, reconstruct=...)``), each level is one block,
named ``level i / block 0: ClassName``; a splitting level returns ``[out, z_new]`` and ``out``
goes on to the next level. Sampling draws ``N(0, T^2 I)`` in the latent coordinates of
``forward`` (the raw factored-out halves, before the learned priors' standardization).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters._common import Adapted, Condition
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["LIBRARY", "adapt", "matches"]

LIBRARY = "rosinality glow-pytorch convention"

_KINDS: dict[str, Any] = {"inverse_kind": InverseKind.ANALYTIC, "log_det_kind": LogDetKind.EXACT}


def _takes_reconstruct(method: Any) -> bool:
    try:
        return "reconstruct" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def matches(obj: Any) -> bool:
    """An ``nn.Module`` whose ``reverse`` takes ``reconstruct`` (and has no ``inverse``)."""
    return (
        isinstance(obj, nn.Module)
        and callable(getattr(obj, "reverse", None))
        and not callable(getattr(obj, "inverse", None))
        and _takes_reconstruct(obj.reverse)
    )


def _forward(module: nn.Module, x: Tensor) -> Any:
    _, logdet, z_outs = module(x)
    return list(z_outs), logdet


def _inverse(module: Any, z: Any) -> Tensor:
    return module.reverse(list(z), reconstruct=True)


def _level_forward(module: nn.Module, h: Tensor) -> Any:
    out, logdet, _, z_new = module(h)
    return ([out, z_new], logdet) if getattr(module, "split", True) else (z_new, logdet)


def _level_inverse(module: Any, z: Any) -> Tensor:
    if getattr(module, "split", True):
        out, z_new = z
        return module.reverse(out, z_new, reconstruct=True)
    return module.reverse(z, z, reconstruct=True)


def _levels(module: nn.Module) -> list[nn.Module]:
    blocks = getattr(module, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and all(_takes_reconstruct(getattr(b, "reverse", None)) for b in blocks):
        return list(blocks)
    return []


def _blocks(domain: DataDomain):
    def blocks(module: nn.Module) -> list[InvertibleModel]:
        return [
            InvertibleModel(
                b,
                _level_forward,
                _level_inverse,
                ModelInfo(domain=domain, architecture=f"level {i} / block 0: {type(b).__name__}", **_KINDS),
            )
            for i, b in enumerate(_levels(module))
        ]

    return blocks


def adapt(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None) -> Adapted:
    """Wrap a model of the rosinality convention: forward's ``z_outs``, ``reverse(reconstruct=True)``.

    Raises:
        LoadError: a condition was given (the convention takes none).
    """
    if condition is not None:
        raise LoadError(
            f"--condition was given, but {type(obj).__name__} follows the rosinality Glow "
            "convention, which takes no condition; drop --condition"
        )
    info = ModelInfo(
        domain=domain, source={**source, "library": "rosinality"}, architecture=type(obj).__name__, **_KINDS
    )
    return Adapted(InvertibleModel(obj, _forward, _inverse, info, blocks_fn=_blocks(domain) if _levels(obj) else None))
