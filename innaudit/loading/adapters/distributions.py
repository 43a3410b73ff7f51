"""``torch.distributions`` transforms and pyro transforms (``TransformModule``, conditional ones).

Both libraries call ``y = t(x)`` the sampling direction, latent -> data, so innaudit's forward
(data -> latent) is ``t.inv`` and its inverse is ``t``; the log-det of data -> latent at ``x`` is
``-t.log_abs_det_jacobian(z, x)`` with ``z = t.inv(x)``, summed over the event for element-wise
transforms. ``TransformedDistribution`` is audited through its transforms.

The cache trap: pyro's learnable transforms are
built with ``cache_size=1``, and ``t.inv(t(x))`` then hands back the cached ``x`` object without
computing anything, an exact-looking round trip. Every transform in the tree gets
``_cache_size = 0`` and an emptied cache before each call, on top of InvertibleModel's clones.
Planar, Radial, Sylvester, Polynomial, BlockAutoregressive and NeuralAutoregressive have no
inverse except that cache, so they are refused.
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import Tensor, nn
from torch.distributions import ComposeTransform, Transform, TransformedDistribution

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters._common import (
    Adapted,
    Condition,
    TransformHolder,
    from_library,
    leaf_name,
    sum_per_sample,
)
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["LIBRARY", "adapt", "break_caches", "matches"]

LIBRARY = "torch.distributions/pyro"

CACHE_ONLY_INVERSE = frozenset(
    {
        "Planar",
        "ConditionalPlanar",
        "Radial",
        "ConditionalRadial",
        "Sylvester",
        "Polynomial",
        "BlockAutoregressive",
        "NeuralAutoregressive",
        "ConditionalNeuralAutoregressive",
    }
)


def _conditional(obj: Any) -> bool:
    return (
        isinstance(obj, nn.Module)
        and not isinstance(obj, Transform)
        and from_library(obj, "pyro")
        and callable(getattr(obj, "condition", None))
    )


def matches(obj: Any) -> bool:
    """A Transform, a TransformedDistribution, or a pyro conditional transform module."""
    return isinstance(obj, (Transform, TransformedDistribution)) or _conditional(obj)


def _tree(t: Any, seen: set[int] | None = None) -> list[Transform]:
    """Every Transform reachable from ``t`` (parts, inverses, wrapped bases)."""
    seen = set() if seen is None else seen
    if id(t) in seen or not isinstance(t, Transform):
        return []
    seen.add(id(t))
    found = [t]
    for value in vars(t).values():
        if isinstance(value, weakref.ref):
            value = value()
        for item in value if isinstance(value, (list, tuple, nn.ModuleList)) else [value]:
            found += _tree(item, seen)
    return found


def break_caches(t: Any) -> int:
    """Switch every cache in ``t``'s tree off and empty it; returns how many were on."""
    switched = 0
    for part in _tree(t):
        if getattr(part, "_cache_size", 0):
            switched += 1
        part._cache_size = 0
        part._cached_x_y = (None, None)
    return switched


def _transform(module: nn.Module, condition: Condition | None, x: Tensor) -> Transform:
    inner: Any = module.inner if isinstance(module, TransformHolder) else module
    if condition is not None:
        inner = inner.condition(condition.for_batch(x))
    break_caches(inner)
    return inner


def _maps(condition: Condition | None):
    def forward(module: nn.Module, x: Tensor) -> Tensor:
        return _transform(module, condition, x).inv(x)

    def inverse(module: nn.Module, z: Tensor) -> Tensor:
        return _transform(module, condition, z)(z)

    def log_det(module: nn.Module, x: Tensor) -> Tensor:
        t = _transform(module, condition, x)
        z = t.inv(x)
        return -sum_per_sample(t.log_abs_det_jacobian(z, x.clone()), x)

    return forward, inverse, log_det


def _as_module(t: Any) -> nn.Module:
    if isinstance(t, nn.Module):
        return t
    return TransformHolder(t, [p for p in _tree(t) if isinstance(p, nn.Module)])


def _root(obj: Any) -> Any:
    """The object to wrap: a TransformedDistribution becomes the composition of its transforms."""
    if isinstance(obj, TransformedDistribution):
        return ComposeTransform(list(obj.transforms))
    return obj


def _kinds(obj: Any) -> dict[str, Any]:
    parts = _tree(obj) if isinstance(obj, Transform) else []
    names = {type(p).__name__ for p in parts} | {type(m).__name__ for m in _modules(obj)}
    if "MatrixExponential" in names:
        iters = next((getattr(p, "iterations", None) for p in parts if type(p).__name__ == "MatrixExponential"), None)
        return {"inverse_kind": InverseKind.ITERATIVE, "log_det_kind": LogDetKind.EXACT, "inverse_max_iter": iters}
    return {"inverse_kind": InverseKind.ANALYTIC, "log_det_kind": LogDetKind.EXACT}


def _modules(obj: Any) -> list[nn.Module]:
    return list(obj.modules()) if isinstance(obj, nn.Module) else []


def _check(obj: Any, condition: Condition | None) -> None:
    names = {type(p).__name__ for p in _tree(obj)} | {type(m).__name__ for m in _modules(obj)}
    refused = sorted(names & CACHE_ONLY_INVERSE)
    if refused:
        raise LoadError(
            f"{', '.join(refused)} has no inverse except its cache (pyro-ppl/pyro#2718), "
            "so data -> latent cannot be computed; innaudit audits bijections with "
            "both directions"
        )
    if _conditional(obj) and condition is None:
        raise LoadError(f"pyro {type(obj).__name__} is conditional; pass --condition SPEC")
    if condition is not None and not _conditional(obj):
        raise LoadError(f"--condition was given, but {type(obj).__name__} is not a conditional transform")


def _blocks_fn(domain: DataDomain):
    def blocks(module: nn.Module) -> list[InvertibleModel]:
        inner = module.inner if isinstance(module, TransformHolder) else module
        parts = list(getattr(inner, "parts", []))
        forward, inverse, log_det = _maps(None)
        return [
            InvertibleModel(
                _as_module(part),
                forward,
                inverse,
                ModelInfo(domain=domain, architecture=leaf_name(part, i), **_kinds(part)),
                log_det_fn=log_det,
            )
            for i, part in enumerate(reversed(parts))
        ]  # data -> latent order

    return blocks


def adapt(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None) -> Adapted:
    """Wrap a torch / pyro transform with its directions swapped and its caches off."""
    root = _root(obj)
    _check(root, condition)
    switched = break_caches(root) if isinstance(root, Transform) else 0
    forward, inverse, log_det = _maps(condition)
    info = ModelInfo(
        domain=domain,
        source={**source, "library": LIBRARY, "caches_switched_off": str(switched)},
        architecture=f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}",
        **_kinds(root),
    )
    composite = isinstance(root, ComposeTransform) and condition is None
    model = InvertibleModel(
        _as_module(root),
        forward,
        inverse,
        info,
        log_det_fn=log_det,
        blocks_fn=_blocks_fn(domain) if composite else None,
    )
    return Adapted(model)
