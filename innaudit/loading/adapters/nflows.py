"""nflows: ``Flow`` (a distribution around a transform) and any ``Transform``.

nflows' ``t(x, context) -> (z, logabsdet)`` is data -> latent; ``t.inverse(z, context)`` goes
back. A ``Flow`` keeps its transform at ``_transform`` and passes the context through
``_embedding_net`` first, so the adapter does the same. Blocks: the ``_transforms`` of a
``CompositeTransform``. Train-mode BatchNorm refuses to invert and updates its statistics; the
model is always called in eval mode.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.loading.adapters._common import Adapted, Condition, LibraryFlow, from_library, leaf_name, sum_per_sample
from innaudit.loading.adapters.nflows_multiscale import is_multiscale, level_blocks, structured_maps
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["LIBRARY", "adapt", "matches"]

LIBRARY = "nflows"


def matches(obj: Any) -> bool:
    """An nflows ``Flow`` / ``Distribution`` with a transform, or an nflows ``Transform``."""
    return isinstance(obj, nn.Module) and from_library(obj, "nflows")


def _parts(obj: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """``(transform, embedding net)``: a Flow's private pieces, or the transform itself."""
    transform = getattr(obj, "_transform", None)
    if isinstance(transform, nn.Module):
        return transform, getattr(obj, "_embedding_net", None)
    return obj, None


def _maps(condition: Condition | None, embedding: bool):
    def context(module: nn.Module, x: Tensor) -> Tensor | None:
        if condition is None:
            return None
        c = condition.for_batch(x)
        net = getattr(module, "_embedding_net", None) if embedding else None
        return net(c) if net is not None else c

    def transform(module: nn.Module) -> LibraryFlow:
        return cast(LibraryFlow, module._transform if embedding else module)

    def forward(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        z, ld = transform(module)(x, context=context(module, x))
        return z, sum_per_sample(ld, x)

    def inverse(module: nn.Module, z: Tensor) -> Tensor:
        return transform(module).inverse(z, context=context(module, z))[0]

    return forward, inverse


def _kinds(transform: nn.Module) -> dict[str, Any]:
    numeric = [m for m in transform.modules() if "UMNN" in type(m).__name__]
    kind = InverseKind.ITERATIVE if numeric else InverseKind.ANALYTIC
    return {"inverse_kind": kind, "log_det_kind": LogDetKind.EXACT}


def _blocks_fn(domain: DataDomain, condition: Condition | None):
    def blocks(module: nn.Module) -> list[InvertibleModel]:
        transform, _ = _parts(module)
        inner = getattr(transform, "_transforms", None)
        if not isinstance(inner, nn.ModuleList):
            return []
        embedding = getattr(module, "_embedding_net", None)
        found = []
        for i, block in enumerate(inner):
            forward, inverse = _maps(condition, False)
            if embedding is not None and condition is not None:
                forward, inverse = _embedded(block, embedding, condition)
            info = ModelInfo(domain=domain, architecture=leaf_name(block, i), **_kinds(block))
            found.append(InvertibleModel(block, forward, inverse, info))
        return found

    return blocks


def _embedded(block: nn.Module, embedding: nn.Module, condition: Condition):
    """Maps of one block of a conditional Flow: the flow's embedding net applied to the context."""

    def forward(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        z, ld = module(x, context=embedding(condition.for_batch(x)))
        return z, sum_per_sample(ld, x)

    def inverse(module: nn.Module, z: Tensor) -> Tensor:
        return cast(LibraryFlow, module).inverse(z, context=embedding(condition.for_batch(z)))[0]

    return forward, inverse


def adapt(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None) -> Adapted:
    """Wrap an nflows Flow or Transform (the context, when given, is passed as ``context=``)."""
    transform, embedding = _parts(obj)
    forward, inverse = _maps(condition, transform is not obj)
    info = ModelInfo(
        domain=domain,
        source={**source, "library": LIBRARY},
        architecture=f"nflows.{type(obj).__name__}",
        **_kinds(transform),
    )
    has_blocks = isinstance(getattr(transform, "_transforms", None), nn.ModuleList)
    blocks_fn = _blocks_fn(domain, condition) if has_blocks else None
    if is_multiscale(transform):  # levels, one latent each (nflows_multiscale)
        forward, inverse = structured_maps((forward, inverse), transform)
        blocks_fn = (lambda module: level_blocks(_parts(module)[0], domain)) if condition is None else None
    model = InvertibleModel(obj, forward, inverse, info, blocks_fn=blocks_fn)
    warnings: tuple[str, ...] = ()
    if condition is None and embedding is not None and not isinstance(embedding, nn.Identity):
        warnings = (
            "the nflows Flow has an embedding net but no --condition was given; it is audited without a context",
        )
    return Adapted(model, warnings)
