"""A factory model for the weights-file tests: ``z = W x + b`` with a parameter ``W`` and a
buffer ``b``, so a reading must bring both; its inverse solves for ``x``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

DIM = 4


class Affine(nn.Module):
    """``z = W x + b``; any finite invertible ``W`` round-trips, a NaN ``W`` fails every sample."""

    input_shape = (DIM,)
    data_range = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.eye(DIM))
        self.register_buffer("b", torch.zeros(DIM))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.w.T + self.b

    def inverse(self, z: Tensor) -> Tensor:
        return torch.linalg.solve(self.w, (z - self.b).T).T


class Wrapper(nn.Module):
    """How a training script holds the flow (``self.model``)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Affine()


def build() -> nn.Module:
    """The affine model."""
    return Affine()


def good_state(scale: float = 2.0) -> dict[str, Tensor]:
    """Weights that round-trip: ``W = scale I``, ``b = 0.1``."""
    return {"w": scale * torch.eye(DIM), "b": torch.full((DIM,), 0.1)}


def nan_state() -> dict[str, Tensor]:
    """Weights whose every output is NaN."""
    return {"w": torch.full((DIM, DIM), float("nan")), "b": torch.zeros(DIM)}
