"""nflows ``MultiscaleCompositeTransform``: levels that nflows itself concatenates.

nflows' multi-scale transform applies its transforms in turn, splitting each output in two
along ``split_dim`` (all but the last): the first half is that level's output, the second goes
on. It returns the levels reshaped to ``(B, -1)`` and concatenated, and its ``inverse`` takes
that flat tensor. The adapter cuts the flat output into the levels (``_output_shapes``), so the
report can say which level breaks; the flat view audits see is nflows' own, element for
element. Blocks (unconditional models): level ``i`` is ``_transforms[i]`` followed by the split,
returning ``[carried half, level output]``; named ``level i / block 0: ClassName``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.loading.adapters._common import sum_per_sample
from innaudit.model.contract import Fn, InverseKind, InvertibleModel, LogDetKind, ModelInfo

__all__ = ["is_multiscale", "level_blocks", "structured_maps"]


def is_multiscale(transform: Any) -> bool:
    """An nflows ``MultiscaleCompositeTransform`` (by class name along the MRO)."""
    return any(cls.__name__ == "MultiscaleCompositeTransform" for cls in type(transform).__mro__)


def _shapes(transform: Any) -> list[tuple[int, ...]]:
    return [tuple(int(s) for s in shape) for shape in transform._output_shapes]


def structured_maps(maps: tuple[Fn, Fn], transform: Any) -> tuple[Fn, Fn]:
    """``maps`` with the flat latent cut into (and glued back from) nflows' levels."""
    forward, inverse = maps
    shapes = _shapes(transform)
    sizes = [math.prod(s) for s in shapes]

    def levels(module: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
        z, ld = forward(module, x)
        parts = torch.split(z, sizes, dim=1)
        return [p.reshape(len(z), *s) for p, s in zip(parts, shapes, strict=True)], ld

    def glued(module: nn.Module, z: Any) -> Tensor:
        return inverse(module, torch.cat([t.reshape(len(t), -1) for t in z], 1))

    return levels, glued


def _split_maps(split_dim: int, last: bool) -> tuple[Fn, Fn]:
    def forward(module: Any, h: Tensor) -> tuple[Any, Tensor]:
        out, ld = module(h)
        if last:
            return out, sum_per_sample(ld, h)
        level, carried = torch.chunk(out, 2, dim=split_dim)
        return [carried, level], sum_per_sample(ld, h)

    def inverse(module: Any, z: Any) -> Tensor:
        joined = z if last else torch.cat([z[1], z[0]], dim=split_dim)
        return module.inverse(joined)[0]

    return forward, inverse


def level_blocks(transform: Any, domain: DataDomain) -> list[InvertibleModel]:
    """One block per level, in data -> latent order."""
    inner = list(transform._transforms)
    kinds: dict[str, Any] = {"inverse_kind": InverseKind.ANALYTIC, "log_det_kind": LogDetKind.EXACT}
    return [
        InvertibleModel(
            block,
            *_split_maps(int(transform._split_dim), i == len(inner) - 1),
            ModelInfo(domain=domain, architecture=f"level {i} / block 0: {type(block).__name__}", **kinds),
        )
        for i, block in enumerate(inner)
    ]
