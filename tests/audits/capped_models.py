"""A user's flow whose block inverts by a fixed point capped below convergence, as libraries do.

``SinResidual``: ``y = x + 0.9 sin(x)`` per coordinate (``Lip(g) = 0.9``, a contraction, so the
fixed point ``x <- y - 0.9 sin(x)`` converges everywhere, but slowly: the error shrinks by at
most 0.9 per step). Its ``inverse`` runs ``cap`` steps and returns the point it reached, finite,
without a word (FrEIA's ``IResNetLayer`` style); ``solve_inverse`` is the same solver behind the
seam of :mod:`innaudit.model.iterative`, saying honestly whether its step criterion was met.
With ``cap = 3`` no sample away from the origin converges; with ``cap = 500`` every sample does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from innaudit.model.iterative import Solve

DIM = 4


class SinResidual(nn.Module):
    """``y = x + 0.9 sin(x)``, inverted by a fixed point of ``cap`` steps at most."""

    def __init__(self, cap: int, tolerance: float = 1e-6) -> None:
        super().__init__()
        self.cap, self.tolerance = cap, tolerance

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x + 0.9 * torch.sin(x), torch.log1p(0.9 * torch.cos(x)).sum(1)

    def solve_inverse(self, z: Tensor, *, tolerance: float | None = None, max_iter: int | None = None):
        tol = self.tolerance if tolerance is None else tolerance
        cap = self.cap if max_iter is None else max_iter
        x = z.clone()
        iterations = torch.full((len(z),), cap, dtype=torch.long)
        converged = torch.zeros(len(z), dtype=torch.bool)
        for step in range(1, cap + 1):
            new = z - 0.9 * torch.sin(x)
            met = ((new - x).abs() <= tol).all(1) & ~converged
            iterations[met] = step
            converged |= met
            x = new
            if bool(converged.all()):
                break
        return x, Solve(iterations, converged, cap, tol, "fixed-point")

    def inverse(self, z: Tensor) -> Tensor:
        return self.solve_inverse(z)[0]


class UserFlow(nn.Module):
    """One ``SinResidual`` block between two fixed scalings (``self.layers``)."""

    input_shape = (DIM,)
    data_range = (-3.0, 3.0)

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([SinResidual(cap)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(len(x))
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


def capped() -> nn.Module:
    """Three fixed-point steps: far from converged, every output finite."""
    return UserFlow(3).eval()


def enough() -> nn.Module:
    """Five hundred steps: converged."""
    return UserFlow(500).eval()
