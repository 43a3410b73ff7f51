"""``repaired``: a zoo model with the structural remedies of ``innaudit repair`` applied.

A repaired native checkpoint names this architecture with the model it came from and what was
changed, so it rebuilds with no other argument (``innaudit run fixed.pt``)::

    {"name": "repaired", "config": {
        "base": {"name": "coupling-image", "config": {...}},     # the original architecture
        "scale_clamp": {"blocks.3": 2.4, ...},                   # Coupling path -> c
        "inverse_float64": ["blocks.7"]}}                        # blocks whose inverse runs in float64

- ``scale_clamp`` sets :attr:`~innaudit.zoo.layers.Coupling.clamp` on the named affine couplings:
  their scale input ``h`` becomes ``c tanh(h / c)``, so ``1 / g`` is bounded (the paper's remedy
  for affine blocks, which have no global Lipschitz bound while ``1 / g`` is unbounded: Behrmann
  et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, Section 3).
- ``inverse_float64`` wraps the named blocks in :class:`Float64Inverse`: their forward is
  unchanged; their inverse casts its input and the block's parameters to float64 and the result
  back. It helps where the inverse's own arithmetic is what fails in float32 (an ``exp`` that
  overflows, a matrix inverse that loses digits), not where the forward's rounding error is
  amplified (then float64 on one side cannot recover what the other lost).

The module built is the base model itself, changed in place, so it keeps the zoo contract
(``forward``, ``inverse``, ``blocks``, a classifier's ``head``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from innaudit.zoo import build, register
from innaudit.zoo.flow import Invertible
from innaudit.zoo.layers import Coupling

__all__ = ["Float64Inverse", "build_repaired"]

MAX_CLAMP = 50.0
"""Largest accepted soft-clamp bound (``exp(50)`` is 5e21, far inside float32; a trained log-scale is a few units)."""


class _InverseOf(nn.Module):
    """``forward(y) = block.inverse(y)``, so :func:`torch.func.functional_call` can run the
    inverse with other parameters (never registered as a submodule)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, y: Tensor) -> Tensor:
        return cast(Invertible, self.block).inverse(y)


class Float64Inverse(nn.Module):
    """A block whose inverse runs in float64: ``x = cast(f^-1_64(cast64(y)))``.

    ``forward`` is the block's own; ``inverse`` evaluates the block's inverse with every floating
    parameter and buffer cast to float64 (autograd flows through the casts) and casts the result
    back to the input's dtype. ``scales`` passes through to the block (the ``layers`` audit reads
    it). Cost: one cast of the block's parameters per call plus float64 arithmetic.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(block, "inverse", None)):
            raise ValueError(f"{type(block).__name__} has no inverse to run in float64")
        self.block = block

    def forward(self, x: Tensor) -> Any:
        return self.block(x)

    def inverse(self, y: Tensor) -> Tensor:
        if y.dtype == torch.float64:
            return cast(Invertible, self.block).inverse(y)
        state = {
            f"block.{name}": t.double() if t.is_floating_point() else t
            for name, t in [*self.block.named_parameters(), *self.block.named_buffers()]
        }
        out = torch.func.functional_call(_InverseOf(self.block), state, (y.double(),))
        return cast(Tensor, out).to(y.dtype)

    @property
    def scales(self) -> Any:
        """The block's ``scales`` method, or None when it has none."""
        return getattr(self.block, "scales", None)


def _clamp_value(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= MAX_CLAMP:
        raise ValueError(f"scale_clamp[{path!r}] is {value!r}; expected a number in (0, {MAX_CLAMP:g}]")
    return float(value)


def _submodule(model: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"{what}: the model has no module {path!r}") from None


def apply_scale_clamp(model: nn.Module, clamps: Mapping[str, Any]) -> None:
    """Set ``clamp`` on each named affine :class:`Coupling` (ValueError for anything else)."""
    for path, value in clamps.items():
        block = _submodule(model, str(path), "scale_clamp")
        if not isinstance(block, Coupling) or block.coupling != "affine":
            raise ValueError(f"scale_clamp: {path!r} is a {type(block).__name__}, not an affine Coupling")
        block.clamp = _clamp_value(str(path), value)


def apply_float64_inverse(model: nn.Module, paths: Sequence[str]) -> None:
    """Replace each named block by :class:`Float64Inverse` of it, in its parent container."""
    for path in paths:
        parent_path, _, name = str(path).rpartition(".")
        parent = _submodule(model, parent_path, "inverse_float64") if parent_path else model
        block = _submodule(model, str(path), "inverse_float64")
        if isinstance(block, Float64Inverse):
            continue
        setattr(parent, name, Float64Inverse(block))


@register("repaired")
def build_repaired(
    base: Mapping[str, Any],
    scale_clamp: Mapping[str, Any] | None = None,
    inverse_float64: Sequence[str] | None = None,
) -> nn.Module:
    """Build ``base`` (``{"name", "config"}`` of another zoo architecture) and apply the remedies.

    Raises:
        ValueError: an entry names no module, a module of the wrong kind, or a bad bound (the
            loader turns it into a one-line LoadError).
    """
    if not isinstance(base, Mapping) or not isinstance(base.get("name"), str):
        raise ValueError("base must be a mapping with the original architecture's name and config")
    if base["name"] == "repaired":
        raise ValueError("base is itself 'repaired'; expected the original architecture")
    config = base.get("config") or {}
    if not isinstance(config, Mapping):
        raise ValueError(f"base config is a {type(config).__name__}; expected a mapping")
    model = build(base["name"], config)
    if scale_clamp is not None and not isinstance(scale_clamp, Mapping):
        raise ValueError("scale_clamp must map module paths to bounds")
    if inverse_float64 is not None and (
        isinstance(inverse_float64, str) or not all(isinstance(p, str) for p in inverse_float64)
    ):
        raise ValueError("inverse_float64 must be a list of module paths")
    apply_scale_clamp(model, scale_clamp or {})
    apply_float64_inverse(model, list(inverse_float64 or ()))
    return model
