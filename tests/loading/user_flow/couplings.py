"""A user's own additive coupling, kept beside the factory file that imports it (as
``python flow.py`` would find it), with the ``lipschitz_bounds()`` hook the ``bounds`` audit reads."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdditiveCoupling(nn.Module):
    """``y = (x_a, x_b + t(x_a))`` over the halves of a vector (swapped when ``flip``); log-det 0."""

    def __init__(self, dim: int, hidden: int, flip: bool, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.flip, self.half = flip, dim // 2
        self.net = nn.Sequential(nn.Linear(self.half, hidden), nn.Tanh(), nn.Linear(hidden, dim - self.half))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[:, : self.half], x[:, self.half :]
        return (b, a) if self.flip else (a, b)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat((b, a) if self.flip else (a, b), 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self._split(x)
        return self._join(a, b + self.net(a)), torch.zeros(len(x), dtype=x.dtype, device=x.device)

    def inverse(self, y: Tensor) -> Tensor:
        a, b = self._split(y)
        return self._join(a, b - self.net(a))

    def lipschitz_bounds(self) -> tuple[float, float]:
        """``1 + Lip(t)`` both ways, ``Lip(t) <= ||W_1||_2 ||W_2||_2`` (tanh is 1-Lipschitz)."""
        lip = 1.0
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                lip *= float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
        return 1.0 + lip, 1.0 + lip
