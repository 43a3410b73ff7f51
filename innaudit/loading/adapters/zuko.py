"""zuko: ``Flow`` (a ``LazyDistribution``) and any ``LazyTransform``.

``flow.transform(c)`` builds a ``torch.distributions.Transform`` going data -> latent from the
current parameters; its ``inv`` goes back, and ``call_and_ladj`` gives the log-det. zuko
transforms have ``cache_size=0`` and are rebuilt on every call, so no stale cache can fake a
round trip. Blocks: the ``transforms`` of a ``LazyComposedTransform``. Inverse kinds
neural / polynomial / Gaussianization flows invert by
bisection (``eps`` 1e-6 on ``[-bound, bound]``, values outside silently clamped); CNF by an ODE
solve (``atol`` 1e-6, ``rtol`` 1e-5) with a Hutchinson log-det when ``exact=False``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters._common import (
    Adapted,
    Condition,
    block_models,
    from_library,
    library_error,
    sum_per_sample,
)
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["LIBRARY", "adapt", "matches"]

LIBRARY = "zuko"


def matches(obj: Any) -> bool:
    """A zuko lazy distribution with a ``transform``, or a zuko lazy transform."""
    return isinstance(obj, nn.Module) and from_library(obj, "zuko")


def _lazy(module: nn.Module) -> nn.Module:
    """The LazyTransform of a Flow, or the module itself when it is one."""
    transform = getattr(module, "transform", None)
    return transform if isinstance(transform, nn.Module) else module


def _maps(condition: Condition | None):
    def build(module: nn.Module, x: Tensor) -> Any:
        return _lazy(module)(condition.for_batch(x) if condition is not None else None)

    def forward(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        z, ladj = build(module, x).call_and_ladj(x)
        return z, sum_per_sample(ladj, x)

    def inverse(module: nn.Module, z: Tensor) -> Tensor:
        return build(module, z).inv(z)

    return forward, inverse


def _kinds(module: nn.Module) -> dict[str, Any]:
    from zuko.transforms import MonotonicTransform

    for m in module.modules():
        name = type(m).__name__
        if name == "FFJTransform":
            exact = bool(getattr(m, "exact", True))
            return {
                "inverse_kind": InverseKind.ITERATIVE,
                "inverse_tolerance": float(getattr(m, "atol", 1e-6)),
                "log_det_kind": LogDetKind.EXACT if exact else LogDetKind.ESTIMATED,
            }
        univariate = getattr(m, "univariate", None)
        bisects = name in ("MNN", "UMNN") or (
            isinstance(univariate, type) and issubclass(univariate, MonotonicTransform)
        )
        if bisects:
            return {"inverse_kind": InverseKind.ITERATIVE, "inverse_tolerance": 1e-6, "log_det_kind": LogDetKind.EXACT}
    return {"inverse_kind": InverseKind.ANALYTIC, "log_det_kind": LogDetKind.EXACT}


def _check(obj: nn.Module, domain: DataDomain, condition: Condition | None) -> None:
    """One call without a context tells a conditional flow from an unconditional one."""
    x = torch.zeros(1, *domain.shape, dtype=_dtype(obj))
    try:
        with torch.no_grad():
            _lazy(obj)(None)(x)
        conditional = False
    except Exception as exc:  # a conditional flow fails without its context
        conditional, error = True, exc
    if conditional and condition is None:
        raise library_error(
            LIBRARY, error, f"{type(obj).__name__} without a context (a conditional flow needs --condition SPEC)"
        )
    if condition is not None and not conditional:
        raise LoadError(f"--condition was given, but zuko {type(obj).__name__} runs without a context")


def _dtype(module: nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _blocks_fn(domain: DataDomain, condition: Condition | None):
    def blocks(module: nn.Module) -> list[InvertibleModel]:
        inner = getattr(_lazy(module), "transforms", None)
        if not isinstance(inner, nn.ModuleList):
            return []
        return block_models(list(inner), _maps(condition), domain, _kinds)

    return blocks


def adapt(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None) -> Adapted:
    """Wrap a zuko Flow or LazyTransform (``flow.transform(c)``, ``.inv``)."""
    if not callable(getattr(_lazy(obj), "forward", None)):
        raise LoadError(f"zuko {type(obj).__name__} has no transform to audit")
    _check(obj, domain, condition)
    forward, inverse = _maps(condition)
    info = ModelInfo(
        domain=domain, source={**source, "library": LIBRARY}, architecture=f"zuko.{type(obj).__name__}", **_kinds(obj)
    )
    composite = isinstance(getattr(_lazy(obj), "transforms", None), nn.ModuleList)
    return Adapted(
        InvertibleModel(obj, forward, inverse, info, blocks_fn=_blocks_fn(domain, condition) if composite else None)
    )
