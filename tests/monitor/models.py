"""Known-answer models for the monitor tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ScaleCoupling(nn.Module):
    """``z = (x1, x2 * exp(s * x1) + t)``: ``sigma`` of ``J_F`` known, overflow where ``s * x1 > 88.7``.

    With ``s = 1`` every input in ``[-5, 5]^2`` round-trips; with ``s = 30`` the far OOD set
    (``x1`` near 4, ``exp(120)``) overflows float32 while the data (``x1`` in ``[0, 1]``) does not.
    """

    input_shape = (2,)
    data_range = (0.0, 1.0)

    def __init__(self, s: float = 1.0) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s)))
        self.t = nn.Parameter(torch.tensor(0.1))
        self.drop = nn.Dropout(0.5)  # a module whose train/eval mode matters
        self.register_buffer("inverse_error", torch.tensor(0.0))  # a wrong inverse shift, for tests

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, :1], x[:, 1:]
        z2 = x2 * torch.exp(self.s * x1) + self.t
        return torch.cat([x1, z2], 1), (self.s * x1).squeeze(1)

    def inverse(self, z: Tensor) -> Tensor:
        z1, z2 = z[:, :1], z[:, 1:]
        return torch.cat([z1, (z2 - self.t - self.inverse_error) * torch.exp(-self.s * z1)], 1)


def data(n: int = 32) -> Tensor:
    """In-distribution samples in ``[0, 1]^2``."""
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(1))


def far(n: int = 16) -> Tensor:
    """An OOD set with ``x1`` in ``[3.5, 4.5]``."""
    g = torch.Generator().manual_seed(2)
    return torch.stack([3.5 + torch.rand(n, generator=g), torch.rand(n, generator=g)], 1)
