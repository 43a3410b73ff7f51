"""TorchScript archives that export ``forward`` (data -> latent) and ``inverse``.

A TorchScript archive is code: :mod:`innaudit.safeio.checkpoint`
refuses it unless ``--trust-checkpoint`` is given, and only then does it reach this adapter. The
archive must export ``inverse`` (``@torch.jit.export``); ``forward`` may return ``z`` or
``(z, log_det)``. Export a model like this::

    class Exported(torch.nn.Module):
        def __init__(self, flow): super().__init__(); self.flow = flow
        def forward(self, x): return self.flow(x)
        @torch.jit.export
        def inverse(self, z): return self.flow.inverse(z)

    torch.jit.script(Exported(flow)).save("flow.ts")
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.loading.adapters._common import Adapted, Condition
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["LIBRARY", "adapt", "matches"]

LIBRARY = "TorchScript"


def matches(obj: Any) -> bool:
    """A scripted or traced module (``torch.jit.ScriptModule``)."""
    return isinstance(obj, torch.jit.ScriptModule)


def _forward(module: nn.Module, x: Tensor) -> Any:
    return module(x)


def _inverse(module: nn.Module, z: Tensor) -> Any:
    return module.inverse(z)  # type: ignore[operator]


def adapt(obj: Any, domain: DataDomain, source: dict[str, str], condition: Condition | None) -> Adapted:
    """Wrap a TorchScript module; its declared kinds (``inverse_kind`` attributes) are read too."""
    if condition is not None:
        raise LoadError(
            "--condition is not supported for TorchScript archives; script a module "
            "whose forward and inverse take the data only"
        )
    if not hasattr(obj, "inverse"):
        raise LoadError(
            "the TorchScript archive exports no inverse method (methods: forward); "
            "export one with @torch.jit.export def inverse(self, z)"
        )
    kind = str(getattr(obj, "inverse_kind", "analytic"))
    info = ModelInfo(
        domain=domain,
        source={**source, "library": LIBRARY},
        architecture=f"TorchScript.{getattr(obj, 'original_name', type(obj).__name__)}",
        inverse_kind=InverseKind(kind) if kind in InverseKind._value2member_map_ else InverseKind.ANALYTIC,
        log_det_kind=LogDetKind.NONE,
    )
    return Adapted(
        InvertibleModel(obj, _forward, _inverse, info),
        (
            f"{source.get('file', 'the archive')} is TorchScript, which is code: it was loaded "
            "because --trust-checkpoint was given",
        ),
    )
