"""Turn a plain ``nn.Module`` (zoo or user-written) into an :class:`InvertibleModel`.

The least a user provides: ``forward(x) -> z`` or ``(z, log_det)``, and ``inverse(z) -> x`` (or
``reverse``). Optional attributes the adapter reads:

- ``blocks``: a sequence of sub-modules with the same contract, in forward order (a block
  returning ``([kept, z_i], log_det)`` factors out a level: see ``InvertibleModel.carry``);
- ``block_names``: one report name per block;
- ``input_shape``, ``data_range`` (``(low, high)``), ``data_levels``: the data domain;
- ``inverse_kind``, ``log_det_kind``, ``inverse_tolerance``, ``inverse_max_iter``;
- ``sample_prior(eps, temperature) -> z``: the model's own prior draw from standard normal
  ``eps`` (a learned prior variance); without it the prior is ``N(0, T^2 I)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["INVERSE_NAMES", "adapt_module", "declared_domain"]

INVERSE_NAMES = ("inverse", "reverse")


def _inverse_name(module: nn.Module) -> str | None:
    for name in INVERSE_NAMES:
        if callable(getattr(module, name, None)):
            return name
    return None


def _call_forward(module: nn.Module, x: Tensor) -> Any:
    return module(x)


def _call_inverse(module: nn.Module, z: Tensor) -> Any:
    return getattr(module, _inverse_name(module) or "inverse")(z)


def declared_domain(module: nn.Module) -> DataDomain | None:
    """The data domain a module declares through ``input_shape`` / ``data_range``, if any."""
    shape = getattr(module, "input_shape", None)
    if shape is None:
        return None
    low, high = getattr(module, "data_range", (0.0, 1.0))
    levels = getattr(module, "data_levels", None)
    return DataDomain(
        shape=tuple(int(s) for s in shape),
        low=float(low),
        high=float(high),
        levels=None if levels is None else int(levels),
    )


def _block_modules(module: nn.Module) -> Sequence[nn.Module]:
    blocks = getattr(module, "blocks", None)
    if isinstance(blocks, (nn.ModuleList, nn.Sequential, list, tuple)) and all(
        isinstance(b, nn.Module) and _inverse_name(b) for b in blocks
    ):
        return list(blocks)
    return []


def _block_name(module: nn.Module, block: nn.Module, index: int) -> str:
    """``block_names[index]`` when the module names its blocks, else ``ClassName[index]``."""
    names = getattr(module, "block_names", None)
    if isinstance(names, (list, tuple)) and len(names) == len(_block_modules(module)):
        return str(names[index])
    return f"{type(block).__name__}[{index}]"


def _blocks_of(info: ModelInfo):
    def blocks(module: nn.Module) -> list[InvertibleModel]:
        return [
            InvertibleModel(
                b,
                _call_forward,
                _call_inverse,
                ModelInfo(
                    domain=info.domain,
                    architecture=_block_name(module, b, i),
                    inverse_kind=_kind(b, "inverse_kind", InverseKind.ANALYTIC),
                    log_det_kind=_kind(b, "log_det_kind", LogDetKind.NONE),
                ),
            )
            for i, b in enumerate(_block_modules(module))
        ]

    return blocks


def _kind(module: nn.Module, attr: str, default: Any) -> Any:
    value = getattr(module, attr, None)
    if value is None:
        return default
    try:
        return type(default)(str(getattr(value, "value", value)))
    except ValueError:
        return default


def adapt_module(
    module: nn.Module, domain: DataDomain, source: dict[str, str], architecture: str = ""
) -> InvertibleModel:
    """Wrap ``module`` as an InvertibleModel with the given domain and provenance.

    Raises:
        LoadError: the module has no ``inverse``/``reverse`` method.
    """
    if not isinstance(module, nn.Module):
        raise LoadError(
            f"the model is a {type(module).__name__}; expected a torch.nn.Module "
            "with forward(x) -> z and inverse(z) -> x"
        )
    if _inverse_name(module) is None:
        raise LoadError(
            f"{type(module).__name__} has no inverse(z) or reverse(z) method; "
            "innaudit needs both directions of the flow"
        )
    info = ModelInfo(
        domain=domain,
        inverse_kind=_kind(module, "inverse_kind", InverseKind.ANALYTIC),
        log_det_kind=_kind(module, "log_det_kind", LogDetKind.NONE),
        source=source,
        architecture=architecture or type(module).__name__,
        inverse_tolerance=getattr(module, "inverse_tolerance", None),
        inverse_max_iter=getattr(module, "inverse_max_iter", None),
    )
    blocks_fn = _blocks_of(info) if _block_modules(module) else None
    prior_fn = _own_prior if callable(getattr(module, "sample_prior", None)) else None
    return InvertibleModel(module, _call_forward, _call_inverse, info, blocks_fn=blocks_fn, prior_fn=prior_fn)


def _own_prior(module: nn.Module, eps: Tensor, temperature: float, generator: Any) -> Any:
    """The module's ``sample_prior(eps, temperature)`` (it draws nothing itself)."""
    return cast(Any, module).sample_prior(eps, temperature)
