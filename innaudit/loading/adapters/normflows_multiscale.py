"""normflows ``MultiscaleFlow`` (its Glow / RealNVP image models): a list of latents, one per level.

normflows' direction is the reverse of innaudit's: data -> latent is
``inverse_and_log_det(x) -> ([z_0, ..., z_{L-1}], log|det|)`` and latent -> data is
``forward_and_log_det(z_list) -> (x, log|det|)``. The adapter calls exactly these two methods,
so a round trip here is normflows' own round trip. ``z_0`` is the coarsest level (the last one
factored out on the way to the latent); level ``i`` of the report is ``z_i``.

Blocks, in data -> latent order: ``transform`` (when set), then for ``i = L-1 .. 0`` the flows
of level ``i`` in reverse and, for ``i > 0``, the split ``merges[i-1].inverse``, whose output
``[kept, z_i]`` carries ``kept`` on to the next level. Each block is named
``level i / block j: ClassName``.

Priors: each level's base distribution ``q0[i]`` (``DiagGaussian``, ``ClassCondDiagGaussian``,
``GlowBase``...) draws the prior samples at a temperature, through normflows' own sampler
under a forked, seeded random state (the global random state is left as it was).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters._common import Adapted, Condition
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["adapt_multiscale", "is_multiscale"]

_KINDS: dict[str, Any] = {"inverse_kind": InverseKind.ANALYTIC, "log_det_kind": LogDetKind.EXACT}


def is_multiscale(obj: Any) -> bool:
    """A normflows ``MultiscaleFlow`` (checked by class name along the MRO, no import)."""
    return any(cls.__name__ == "MultiscaleFlow" for cls in type(obj).__mro__)


def _forward(module: Any, x: Tensor) -> Any:
    return module.inverse_and_log_det(x)


def _inverse(module: Any, z: Any) -> Any:
    return module.forward_and_log_det(list(z))


def _layer_forward(module: Any, x: Tensor) -> Any:
    return module.inverse(x)


def _layer_inverse(module: nn.Module, z: Any) -> Any:
    return module(list(z) if isinstance(z, (list, tuple)) else z)


def _prior(module: Any, eps: Tensor, temperature: float, generator: torch.Generator) -> list[Tensor]:
    """One draw per row of ``eps`` from every level's ``q0`` at ``temperature``, seeded."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    n = int(eps.shape[0])
    draws: list[Tensor] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for q in module.q0:
            before = getattr(q, "temperature", None)
            q.temperature = temperature
            try:
                z, _ = q(n)
            finally:
                q.temperature = before
            draws.append(z.to(dtype=eps.dtype, device=eps.device))
    return draws


def _blocks(domain: DataDomain):
    def blocks(module: Any) -> list[InvertibleModel]:
        out: list[tuple[str, nn.Module]] = []
        if module.transform is not None:
            out.append(("transform", module.transform))
        for i in range(len(module.q0) - 1, -1, -1):
            layers = list(reversed(list(module.flows[i])))
            if i > 0:
                layers.append(module.merges[i - 1])
            out += [(f"level {i} / block {j}: {type(m).__name__}", m) for j, m in enumerate(layers)]
        return [
            InvertibleModel(m, _layer_forward, _layer_inverse, ModelInfo(domain=domain, architecture=name, **_KINDS))
            for name, m in out
        ]

    return blocks


def adapt_multiscale(
    obj: nn.Module, domain: DataDomain, source: dict[str, str], condition: Condition | None
) -> Adapted:
    """Wrap a normflows MultiscaleFlow; its class-conditional priors need no condition.

    Raises:
        LoadError: a condition was given (the flows of a MultiscaleFlow take none).
    """
    if condition is not None:
        raise LoadError(
            "--condition was given, but the flows of a normflows MultiscaleFlow take no "
            "context (only its class-conditional priors do); drop --condition"
        )
    info = ModelInfo(
        domain=domain,
        source={**source, "library": "normflows"},
        architecture=f"normflows.{type(obj).__name__}",
        **_KINDS,
    )
    return Adapted(InvertibleModel(obj, _forward, _inverse, info, blocks_fn=_blocks(domain), prior_fn=_prior))
