"""normflows: ``NormalizingFlow``, ``ConditionalNormalizingFlow``, ``MultiscaleFlow``, single layers.

normflows' direction is the reverse of innaudit's: a layer's ``forward(z)`` maps latent -> data
and ``inverse(x)`` maps data -> latent, each returning ``(out, log|det|)`` of its own
direction. So innaudit's forward walks ``flows`` backwards calling ``inverse``, and its inverse
walks them forwards calling ``forward``. The log-det is summed here, in the input's dtype:
``NormalizingFlow.inverse_and_log_det`` accumulates in the default dtype (float32) even for a
float64 model. ``Residual`` layers have a fixed-point inverse (tolerance 1e-5, 1000 iterations,
silent when they stop) and a stochastic log-det.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters._common import Adapted, Condition, LibraryFlow, block_models, from_library
from innaudit.loading.adapters.normflows_multiscale import adapt_multiscale, is_multiscale
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["LIBRARY", "adapt", "matches"]

LIBRARY = "normflows"


def matches(obj: Any) -> bool:
    """A normflows model or flow layer."""
    return isinstance(obj, nn.Module) and from_library(obj, "normflows")


def _layers(module: nn.Module) -> list[nn.Module]:
    """The flow layers in latent -> data order (normflows' own order)."""
    flows = getattr(module, "flows", None)
    return list(flows) if isinstance(flows, nn.ModuleList) else [module]


def _maps(condition: Condition | None):
    def kwargs(x: Tensor) -> dict[str, Tensor]:
        return {"context": condition.for_batch(x)} if condition is not None else {}

    def forward(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in reversed(_layers(module)):
            x, ld = cast(LibraryFlow, layer).inverse(x, **kwargs(x))
            total = total + ld
        return x, total

    def inverse(module: nn.Module, z: Tensor) -> Tensor:
        for layer in _layers(module):
            z, _ = layer(z, **kwargs(z))
        return z

    return forward, inverse


def _kinds(module: nn.Module) -> dict[str, Any]:
    residual = [m for m in module.modules() if type(m).__name__ == "Residual"]
    if residual:
        return {
            "inverse_kind": InverseKind.ITERATIVE,
            "log_det_kind": LogDetKind.ESTIMATED,
            "inverse_tolerance": 1e-5,
            "inverse_max_iter": 1000,
        }
    return {"inverse_kind": InverseKind.ANALYTIC, "log_det_kind": LogDetKind.EXACT}


def _check(obj: nn.Module, condition: Condition | None) -> None:
    import normflows as nf

    name = type(obj).__name__
    missing = [
        type(layer).__name__
        for layer in _layers(obj)
        if isinstance(layer, nf.flows.Flow) and type(layer).inverse is nf.flows.Flow.inverse
    ]
    if missing:
        raise LoadError(
            f"normflows {', '.join(sorted(set(missing)))} has no inverse (data -> latent "
            "is not computable); innaudit audits bijections with both directions"
        )
    conditional = isinstance(obj, nf.ConditionalNormalizingFlow)
    if conditional and condition is None:
        raise LoadError(f"normflows {name} takes a context; pass --condition SPEC")
    if condition is not None and not conditional:
        raise LoadError(f"--condition was given, but normflows {name} is not conditional")


def _blocks_fn(domain: DataDomain, condition: Condition | None):
    def blocks(module: nn.Module) -> list[InvertibleModel]:
        layers = list(reversed(_layers(module)))  # data -> latent order
        return block_models(layers, _maps(condition), domain, _kinds)

    return blocks


def adapt(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None) -> Adapted:
    """Wrap a normflows NormalizingFlow (or one layer), swapping its directions; a
    MultiscaleFlow goes to :mod:`.normflows_multiscale`."""
    if is_multiscale(obj):
        return adapt_multiscale(obj, domain, source, condition)
    _check(obj, condition)
    forward, inverse = _maps(condition)
    info = ModelInfo(
        domain=domain,
        source={**source, "library": LIBRARY},
        architecture=f"normflows.{type(obj).__name__}",
        **_kinds(obj),
    )
    composite = isinstance(getattr(obj, "flows", None), nn.ModuleList)
    return Adapted(
        InvertibleModel(obj, forward, inverse, info, blocks_fn=_blocks_fn(domain, condition) if composite else None)
    )
