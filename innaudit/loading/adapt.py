"""Turn a plain ``nn.Module`` (zoo or user-written) into an :class:`InvertibleModel`.

The least a user provides: ``forward(x) -> z`` or ``(z, log_det)``, and ``inverse(z) -> x`` (or
``reverse``). Optional attributes the adapter reads:

- the blocks, sub-modules with the same contract in forward order (a block returning
  ``([kept, z_i], log_det)`` factors out a level: see ``InvertibleModel.carry``), found by
  :func:`find_blocks`: the hook ``innaudit_blocks()``, else an ``nn.Sequential`` /
  ``nn.ModuleList`` attribute (or a method returning one) named ``blocks``, ``layers``,
  ``flows``, ``transforms`` or ``steps``;
- ``block_names``: one report name per block;
- ``input_shape``, ``data_range`` (``(low, high)``), ``data_levels``: the data domain;
- ``inverse_kind``, ``log_det_kind``, ``inverse_tolerance``, ``inverse_max_iter``;
- ``sample_prior(eps, temperature) -> z``: the model's own prior draw from standard normal
  ``eps`` (a learned prior variance); without it the prior is ``N(0, T^2 I)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError
from innaudit.model.contract import InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["BLOCKS_HOOK", "CHAIN_ATTRIBUTES", "INVERSE_NAMES", "adapt_module", "declared_domain", "find_blocks"]

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
    declared = getattr(module, "data_range", None)
    low, high = (0.0, 1.0) if declared is None else declared
    levels = getattr(module, "data_levels", None)
    return DataDomain(
        shape=tuple(int(s) for s in shape),
        low=float(low),
        high=float(high),
        levels=None if levels is None else int(levels),
        assumed_range=declared is None,
    )


BLOCKS_HOOK = "innaudit_blocks"
"""The method a module defines to name its blocks when none of the places below holds them."""

CHAIN_ATTRIBUTES = ("blocks", "layers", "flows", "transforms", "steps")
"""Where a module's chain of invertible blocks is looked for, in this order."""


def _invertible_chain(value: Any) -> list[nn.Module] | None:
    if isinstance(value, (nn.ModuleList, nn.Sequential, list, tuple)) and len(value) > 0:
        items = list(value)
        if all(isinstance(b, nn.Module) and _inverse_name(b) for b in items):
            return items
    return None


def find_blocks(module: nn.Module) -> tuple[list[nn.Module], str] | None:
    """The module's invertible blocks in forward order and where they were found.

    Looked for, first match wins: the hook ``innaudit_blocks()``; then each of
    :data:`CHAIN_ATTRIBUTES` that is an ``nn.Sequential`` / ``nn.ModuleList`` / list of modules
    with ``inverse`` (or ``reverse``), or a method of that name returning one (``blocks()``).
    The blocks are taken to be what ``forward`` applies, in order, to its input.
    """
    hook = getattr(module, BLOCKS_HOOK, None)
    if callable(hook):
        chain = _invertible_chain(hook())
        if chain is None:
            raise LoadError(
                f"{type(module).__name__}.{BLOCKS_HOOK}() must return a non-empty list of modules with "
                "inverse(z) (or reverse(z))"
            )
        return chain, f"{BLOCKS_HOOK}()"
    for name in CHAIN_ATTRIBUTES:
        value = getattr(module, name, None)
        called = callable(value) and not isinstance(value, nn.Module)
        chain = _invertible_chain(value() if called else value)  # type: ignore[misc]
        if chain is not None:
            return chain, f"{name}()" if called else name
    return None


def _block_modules(module: nn.Module) -> Sequence[nn.Module]:
    found = find_blocks(module)
    return found[0] if found else []


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
    found = find_blocks(module)
    if found is not None:
        info = replace(info, source={**info.source, "blocks": f"{found[1]} ({len(found[0])} blocks)"})
    blocks_fn = _blocks_of(info) if found else None
    prior_fn = _own_prior if callable(getattr(module, "sample_prior", None)) else None
    return InvertibleModel(module, _call_forward, _call_inverse, info, blocks_fn=blocks_fn, prior_fn=prior_fn)


def _own_prior(module: nn.Module, eps: Tensor, temperature: float, generator: Any) -> Any:
    """The module's ``sample_prior(eps, temperature)`` (it draws nothing itself)."""
    return cast(Any, module).sample_prior(eps, temperature)
