"""Models for the Python API and containment tests, loadable as ``tests/api_models.py:NAME``.

- ``Squash``: ``z = x / (1 + |x|)`` elementwise, a bijection of R onto (-1, 1) with inverse
  ``x = z / (1 - |z|)``. In float32, ``|x| > 2^24`` gives ``|z| == 1`` exactly, so the inverse
  divides by zero: exact on data in [0, 1], infinite on inputs of size 1e8 (a genuine float32
  explosion, no planted NaN).
- ``ScaledChain``: two diagonal linear blocks ``z = d2 * (d1 * x)`` with chosen scales, so the
  Jacobian's singular values are known exactly (``d1 * d2`` elementwise).
- ``BrokenBoundsChain``: the same chain, but its second block's ``lipschitz_bounds()`` hook
  raises, to show that a crash inside an audit's preparation stays that audit's ``error``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BrokenBoundsChain", "Diagonal", "ScaledChain", "Squash", "broken_bounds", "squash"]


class Squash(nn.Module):
    """``z = x / (1 + |x|)``; exact inverse ``z / (1 - |z|)`` until ``|z|`` rounds to 1."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.input_shape = (dim,)
        self.data_range = (0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return x / (1 + x.abs())

    def inverse(self, z: Tensor) -> Tensor:
        return z / (1 - z.abs())


class Diagonal(nn.Module):
    """``z = d * x`` with ``d`` a fixed vector; certified bounds ``(max d, 1 / min d)``."""

    def __init__(self, scales: Tensor) -> None:
        super().__init__()
        self.d = nn.Parameter(scales.clone())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.d

    def inverse(self, z: Tensor) -> Tensor:
        return z / self.d

    def lipschitz_bounds(self) -> tuple[float, float]:
        d = self.d.detach().abs()
        return float(d.max()), float(1 / d.min())


class BrokenBounds(Diagonal):
    """A diagonal block whose bounds hook raises."""

    def lipschitz_bounds(self) -> tuple[float, float]:
        raise RuntimeError("bounds hook exploded")


class ScaledChain(nn.Module):
    """Two diagonal blocks; singular values of the whole map are ``d1 * d2``."""

    def __init__(self, d1: Tensor, d2: Tensor, last: type[Diagonal] = Diagonal) -> None:
        super().__init__()
        self.input_shape = (len(d1),)
        self.data_range = (0.0, 1.0)
        self.blocks = nn.ModuleList([Diagonal(d1), last(d2)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def inverse(self, z: Tensor) -> Tensor:
        for block in reversed(self.blocks):
            z = block.inverse(z)
        return z


class BrokenBoundsChain(ScaledChain):
    """A chain whose second block's ``lipschitz_bounds()`` raises."""

    def __init__(self) -> None:
        super().__init__(torch.tensor([2.0, 1.0, 0.5, 1.0]), torch.ones(4), last=BrokenBounds)


def squash() -> nn.Module:
    """Factory: the squashing bijection."""
    return Squash()


def broken_bounds() -> nn.Module:
    """Factory: the chain whose bounds hook raises."""
    return BrokenBoundsChain()
