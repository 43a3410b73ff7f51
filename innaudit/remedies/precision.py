"""Remedy *precision*: run the failing blocks' inverse in float64, with its measured cost.

Where a round trip fails in float32 and holds in float64, precision is the limit, not the map.
Not every such failure can be fixed on the inverse side alone: the forward's rounding error
``u ||J_F|| ||x||`` is amplified by ``||J_F^-1||`` whatever precision the inverse runs in, so an
ill-conditioned linear block stays about ``cond(J) * u_float32`` off. What float64 fixes is an
inverse whose *own* arithmetic fails in float32: an ``exp(-s)`` that overflows while the
forward's ``exp(s)`` does not, a matrix inverse that loses digits, an iterative solve that cannot
reach its tolerance. The re-audit tells which case a model is in.

A block fails here when, on the samples of the failing sets, its float32 inverse of its own
float32 output is non-finite or off by more than :data:`BLOCK_TOLERANCE` (relative) while its
float64 inverse of the same output is finite and within it. Those blocks are wrapped in
:class:`~innaudit.zoo.repaired.Float64Inverse` (a native checkpoint records them as
``inverse_float64``). The remedy works on the zoo's sequential models (``blocks``); for other
models it says what to do by hand.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from innaudit.model.contract import InvertibleModel

__all__ = ["BLOCK_TOLERANCE", "CHANGES", "applicable", "failing_blocks", "inverse_seconds", "wrap_blocks"]

BLOCK_TOLERANCE = 1e-4
"""Relative error of one block's round trip beyond which its float32 inverse fails (the
``roundtrip`` warn level)."""

CHANGES = "runs the inverse of {blocks} in float64 (their forward and every weight unchanged)"


def applicable(model: InvertibleModel, native: bool) -> str | None:
    """None when the blocks of ``model`` can be wrapped, else why not."""
    blocks = getattr(model.module, "blocks", None)
    if native and isinstance(blocks, nn.ModuleList) and len(model.blocks()) == len(blocks):
        return None
    return (
        "innaudit wraps the blocks of its own native models only; run the failing blocks' inverse in "
        "float64 in your code (innaudit.zoo.repaired.Float64Inverse shows how)"
    )


def _relative(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-30)


@torch.no_grad()
def failing_blocks(model: InvertibleModel, x: Tensor) -> list[str]:
    """Paths (``blocks.i``) of the blocks whose inverse fails in float32 and holds in float64."""
    found: list[str] = []
    h = x.to(model.dtype)
    for index, block in enumerate(model.blocks()):
        y = block.forward(h)
        keep = torch.isfinite(y.flatten(1)).all(1) & torch.isfinite(h.flatten(1)).all(1)
        if not bool(keep.any()):
            break
        h, y = h[keep], y[keep]
        narrow = block.inverse(y)
        wide = block.copy_as(torch.float64).inverse(y.double())
        bad32 = ~torch.isfinite(narrow.flatten(1)).all(1) | (_relative(narrow, h) > BLOCK_TOLERANCE)
        ok64 = torch.isfinite(wide.flatten(1)).all(1) & (_relative(wide, h) <= BLOCK_TOLERANCE)
        if bool((bad32 & ok64).any()):
            found.append(f"blocks.{index}")
        h = block.carry(y)
    return found


def wrap_blocks(module: nn.Module, paths: Sequence[str]) -> None:
    """Wrap each named block in :class:`~innaudit.zoo.repaired.Float64Inverse`, in place."""
    from innaudit.zoo.repaired import apply_float64_inverse

    apply_float64_inverse(module, list(paths))


def inverse_seconds(model: InvertibleModel, z: Tensor, repeats: int = 5) -> float:
    """Best-of-``repeats`` wall time of ``model.inverse(z)`` (the cost figure of the remedy)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.inverse(z)
        best = min(best, time.perf_counter() - start)
    return best
