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

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from innaudit.core.errors import LoadError

__all__ = ["ARCHITECTURES", "CONFIG_RANGES", "build", "check_config", "register"]

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class decorator: make an architecture buildable by ``name`` from a native checkpoint."""

    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        ARCHITECTURES[name] = cls
        return cls

    return wrap


CONFIG_RANGES: dict[str, tuple[int, int]] = {
    "steps": (1, 1024),
    "blocks": (1, 1024),
    "hidden": (1, 1 << 14),
    "depth": (2, 64),
    "classes": (1, 1 << 16),
    "power_iterations": (0, 10_000),
    "max_iter": (1, 1_000_000),
    "log_det_terms": (1, 1000),
    "seed": (-(1 << 63), (1 << 64) - 1),
    "patch": (1, 256),
    "layers": (1, 256),
    "heads": (1, 1024),
    "expansion": (1, 64),
    "jacobi_max_iter": (1, 1_000_000),
}
"""Declared ranges of the integer settings of the built-in architectures. A checkpoint's
stored config is checked against them before anything is built: ``steps: 200000`` or
``hidden: 10**6`` would allocate or loop for minutes before the shape check could refuse it."""

MAX_SHAPE = (8, 1 << 16, 1 << 26)
"""At most 8 dimensions, each at most 65536, at most 2^26 values per sample."""


def check_config(name: str, config: Mapping[str, Any]) -> None:
    """Refuse a stored config whose numbers are outside :data:`CONFIG_RANGES` or whose
    ``shape`` is not a short list of positive sizes (see :data:`MAX_SHAPE`).

    Raises:
        LoadError: naming the key, its value (bounded) and the accepted range.
    """
    from innaudit.core.errors import short_repr

    for key, value in config.items():
        if key == "shape":
            _check_shape(name, value)
        elif key in CONFIG_RANGES:
            low, high = CONFIG_RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise LoadError(
                    f"architecture {name!r}: stored config {key}={short_repr(value)} is outside "
                    f"the accepted range {low}..{high}; the checkpoint is damaged or hostile"
                )


def _check_shape(name: str, value: Any) -> None:
    from innaudit.core.errors import short_repr

    dims, size, numel = MAX_SHAPE
    ok = (
        isinstance(value, (list, tuple))
        and 0 < len(value) <= dims
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= size for v in value)
    )
    if not ok or math.prod(value) > numel:
        raise LoadError(
            f"architecture {name!r}: stored shape {short_repr(value)} is not a list of at most "
            f"{dims} sizes in 1..{size} with at most {numel} values; the checkpoint is "
            "damaged or hostile"
        )


def build(name: str, config: Mapping[str, Any]) -> nn.Module:
    """Build the registered architecture ``name`` with keyword arguments ``config`` (checked
    against :data:`CONFIG_RANGES` first)."""
    _load_builtin()
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES)) or "none"
        raise LoadError(
            f"checkpoint names architecture {name!r}, which innaudit does not know; "
            f"known: {known}. Upgrade innaudit or load it with a factory"
        )
    check_config(name, config)
    try:
        return ARCHITECTURES[name](**dict(config))
    except (TypeError, ValueError) as exc:
        raise LoadError(f"architecture {name!r} rejected its stored config: {exc}") from None


def _load_builtin() -> None:
    """Import the modules that register the built-in architectures."""
    from innaudit.zoo import classifier, coupling, glow, repaired, residual, tarflow  # noqa: F401


from innaudit.zoo import bounds  # noqa: E402, F401  (registers the zoo blocks' Lipschitz rules on import)
