"""Known-answer factory models, loadable by the CLI as ``tests/fixtures_models.py:NAME``.

Every model is the linear bijection ``z = W x`` on vectors of shape ``(DIM,)`` with a fixed,
well-conditioned ``W = I + 0.1 G`` (``G`` Gaussian, seed 0), and declares ``input_shape`` so
it needs no ``--data`` to be audited. They differ only in ``inverse``:

- ``exact``: ``W^-1 z`` by a linear solve, so a round trip is exact up to float32 rounding;
- ``wrong``: ``z`` itself, so ``x' = W x`` is wrong for every nonzero ``x`` (relative error
  ``||(W - I) x|| / ||x||``, about 0.1 to 0.4, far above the 1e-2 fail threshold);
- ``nan_half``: exact, except that every sample at an even index of the batch is NaN, so the
  non-finite fraction of any set with an even number of samples per batch is exactly 0.5.

The classes live at module level so ``torch.save(module)`` pickles them by reference
(``tests.fixtures_models.ExactLinear``), for the ``--trust-checkpoint`` tests.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DIM", "ExactLinear", "NanHalfLinear", "WrongLinear", "exact", "nan_half", "wrong"]

DIM = 4


def fixed_matrix(dim: int = DIM, seed: int = 0) -> Tensor:
    """``I + 0.1 G`` with ``G`` standard Gaussian from a local generator (condition number ~1.5)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.eye(dim) + 0.1 * torch.randn(dim, dim, generator=generator)


class ExactLinear(nn.Module):
    """``z = W x`` with ``log|det W|``; the inverse solves ``W x = z``."""

    data_range = (0.0, 1.0)

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.input_shape = (dim,)
        self.w = nn.Parameter(fixed_matrix(dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x W^T, log|det W|)`` per sample."""
        return x @ self.w.T, torch.linalg.slogdet(self.w)[1].expand(len(x))

    def inverse(self, z: Tensor) -> Tensor:
        """``W^-1 z`` per sample."""
        return torch.linalg.solve(self.w, z.T).T


class WrongLinear(ExactLinear):
    """Same forward, but the inverse is the identity: wrong everywhere except at ``x = 0``."""

    def inverse(self, z: Tensor) -> Tensor:
        """Returns ``z`` unchanged."""
        return z.clone()


class NanHalfLinear(ExactLinear):
    """Exact inverse, except NaN for the samples at even batch indices (half of an even batch)."""

    def inverse(self, z: Tensor) -> Tensor:
        """``W^-1 z`` with rows ``0, 2, 4, ...`` set to NaN."""
        out = super().inverse(z)
        out[::2] = float("nan")
        return out


def exact() -> nn.Module:
    """Factory: the exact linear flow."""
    return ExactLinear()


def wrong() -> nn.Module:
    """Factory: the linear flow with a wrong inverse."""
    return WrongLinear()


def nan_half() -> nn.Module:
    """Factory: the linear flow whose inverse is NaN for half of the samples."""
    return NanHalfLinear()
