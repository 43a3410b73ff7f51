"""``SequentialFlow``: a flow that is a sequence of invertible blocks (the zoo's common base)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

from torch import Tensor, nn

__all__ = ["Invertible", "SequentialFlow"]


class Invertible(Protocol):
    """A zoo block or model seen through its inverse (``forward`` comes with ``nn.Module``)."""

    def inverse(self, z: Tensor) -> Tensor: ...


class SequentialFlow(nn.Module):
    """A stack of invertible blocks with the zoo module contract (see :mod:`innaudit.zoo`).

    ``forward(x)`` runs the blocks in order and sums their log-dets; ``inverse(z)`` runs their
    inverses in reverse order.
    """

    inverse_kind = "analytic"
    log_det_kind = "exact"

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``z = f_K(...f_1(x))`` and ``log|det dz/dx| = sum_k log_det_k``, shape ``(batch,)``."""
        log_det = x.new_zeros(x.shape[0])
        for block in self.blocks:
            x, block_log_det = block(x)
            log_det = log_det + block_log_det
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        """``x = f_1^{-1}(...f_K^{-1}(z))``."""
        for block in reversed(self.blocks):
            z = cast(Invertible, block).inverse(z)
        return z
