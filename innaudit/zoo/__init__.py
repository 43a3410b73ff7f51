"""Built-in architectures, registered by name so a native checkpoint can name one.

Every zoo model follows one module contract, which :func:`innaudit.loading.adapt` relies on:

- ``forward(x) -> (z, log_det)`` with ``log_det`` of shape ``(batch,)``;
- ``inverse(z) -> x``;
- ``blocks``: an ``nn.ModuleList`` of invertible blocks in forward order, each with the same
  ``forward(x) -> (y, log_det)`` / ``inverse(y) -> x`` contract, so audits can localize failures;
- optionally ``block_names``: one name per block (the multi-scale ``glow`` names them
  ``level i / block j: ClassName``);
- ``inverse_kind`` / ``log_det_kind`` class attributes (``"analytic"`` / ``"exact"`` unless the
  architecture says otherwise), and for iterative inverses ``inverse_tolerance`` and
  ``inverse_max_iter``.

``build(name, config)`` rebuilds a model from its registered name and the plain-data config
stored in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..errors import LoadError

__all__ = ["ARCHITECTURES", "build", "register"]

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class decorator: make an architecture buildable by ``name`` from a native checkpoint."""

    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        ARCHITECTURES[name] = cls
        return cls

    return wrap


def build(name: str, config: Mapping[str, Any]) -> nn.Module:
    """Build the registered architecture ``name`` with keyword arguments ``config``."""
    _load_builtin()
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES)) or "none"
        raise LoadError(f"checkpoint names architecture {name!r}, which innaudit does not know; "
                        f"known: {known}. Upgrade innaudit or load it with a factory")
    try:
        return ARCHITECTURES[name](**dict(config))
    except (TypeError, ValueError) as exc:
        raise LoadError(f"architecture {name!r} rejected its stored config: {exc}") from None


def _load_builtin() -> None:
    """Import the modules that register the built-in architectures."""
    from . import classifier, coupling, glow, residual  # noqa: F401
