"""A model with a failure region planted at a known place inside every dequantization cell.

Only torch is imported here, so the CLI can load this file by path
(``innaudit run tests/audits/attack_models.py:planted``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LEVELS = 16
DIM = 32


class PlantedHole(nn.Module):
    r"""Coupling ``z = (x1, x2 * g)``, ``g = exp(80 - K (a(x1) + 1))``, on ``[0, 1]^32``, 16 levels.

    ``a(x1) = mean_i(-cos(2 pi L x1_i))`` over the first 31 coordinates is -1 on the quantization
    levels and +1 exactly at the centres of the dequantization cells. With ``K = 104`` the scale
    ``g`` is at most ``e^80`` (finite) on the levels, a normal float32 for ``a < 0.61``, subnormal
    above (the round trip loses digits; more than 1e-2 relative for ``a > 0.73``), and exactly 0
    for ``a > 0.77`` (``exp(-104)`` underflows), where ``x2' = 0 / 0`` is NaN.

    So the failure region is a small box around the centre of the cell of every data point,
    reachable from any point of the cell within half a bin (the L_inf ball around a point of the
    cell always holds the centre). A uniform random point of the ball has ``a`` close to
    ``N(0, 1/(2 * 31))``, std 0.13: ``a > 0.67`` is a 5-sigma event, so random search with a few
    hundred draws almost never lands there (``a > 0.61`` is 4.7 sigma), while ``grad a`` points straight at the centre.
    """

    input_shape = (DIM,)
    data_range = (0.0, 1.0)
    data_levels = LEVELS

    def __init__(self, k: float = 104.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def _log_scale(self, x1: Tensor) -> Tensor:
        a = (-torch.cos(2 * math.pi * LEVELS * x1)).mean(1, keepdim=True)
        return 80.0 - self.k * (a + 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, :-1], x[:, -1:]
        log_g = self._log_scale(x1)
        return torch.cat([x1, x2 * log_g.exp()], 1), log_g.squeeze(1)

    def inverse(self, z: Tensor) -> Tensor:
        y1, y2 = z[:, :-1], z[:, -1:]
        return torch.cat([y1, y2 / self._log_scale(y1).exp()], 1)


def planted() -> nn.Module:
    """The factory the CLI loads."""
    return PlantedHole()


def level_points(count: int, seed: int = 0) -> Tensor:
    """``count`` points on the quantization grid, levels 2..13 (away from the range's edges)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, 14, (count, DIM), generator=gen).float() / LEVELS
