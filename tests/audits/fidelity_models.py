"""Known-answer models for the fidelity cases (issue 29): each with its answer computed by hand.

Only torch is imported, so ``innaudit run tests/audits/fidelity_models.py:NAME`` loads them from
any directory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class WrongFar(nn.Module):
    """``z = c x`` with ``c = 1e37``; the inverse is exact for ``|x| <= 2`` and off by 35 % beyond
    (``x' = 1.35 z / c``), in every precision. In float32 ``c x`` overflows for ``x > 34``
    (float32 max 3.4e38), so a set uniform on ``[0, 50]`` is 32 % non-finite in float32, finite
    in float64, and wrong by 0.35 relative there in both: finite is not invertible."""

    input_shape = (4,)
    data_range = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(1e37))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * self.c, torch.log(self.c).expand(len(x)) * x.shape[1]

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        x = z / self.c
        return torch.where(x.abs() > 2, 1.35 * x, x)


class Pooling(nn.Module):
    """A "pooling head" declared invertible: ``z = ((x1 + x2) / 2, (x1 + x2) / 2, x3, x4)``.

    Its Jacobian has rank 3 on every sample (``sigma_min = 0``); the inverse ``x1 = x2 = z1``
    cannot recover ``x1 - x2``, so on ``x`` uniform in ``[0, 1]^4`` the round trip is wrong by
    ``|x1 - x2| / sqrt(2)`` while every value stays finite."""

    input_shape = (4,)
    data_range = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.w * (x[:, :1] + x[:, 1:2]) / 2
        return torch.cat([mean, mean, x[:, 2:]], dim=1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z[:, :1] / self.w, z[:, 1:2] / self.w, z[:, 2:]], dim=1)


class ParamScaleActNorm(nn.Module):
    """ActNorm ``y = x * s`` whose ``scales()`` returns the parameter itself (a view that requires
    grad even under ``torch.no_grad()``), and whose outputs are built under
    ``torch.enable_grad()``, so they require grad whatever the caller's mode."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.full((dim,), scale))

    def scales(self, x: torch.Tensor) -> torch.Tensor:
        return self.s.view(1, -1).expand(len(x), -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            return x * self.s, torch.log(self.s.abs()).sum().expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return y / self.s


class GradOutputs(nn.Module):
    """Two :class:`ParamScaleActNorm` blocks: exact inverse, scales 2 and 0.5, log-det 0."""

    input_shape = (4,)
    data_range = (0.0, 1.0)
    log_det_kind = "exact"

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ParamScaleActNorm(4, 2.0), ParamScaleActNorm(4, 0.5)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros(len(x))
        for block in self.blocks:
            x, ld = block(x)
            total = total + ld
        return x, total

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            z = block.inverse(z)
        return z


class PerElementLogDet(nn.Module):
    """``z = 2 x`` on ``(2, 4, 4)`` inputs, returning the log-det per element, ``(B, 2, 4, 4)``
    filled with ``log 2``, instead of its sum ``(B,)``."""

    input_shape = (2, 4, 4)
    data_range = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a * x, torch.log(self.a).expand_as(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.a


CONV_SINGULAR_VALUES = tuple(10.0 ** (-k / 5) for k in range(12))
"""The 1x1 convolution's 12 singular values, 1 down to 10^-2.2 (condition 158): log|det J| = 64
* sum(log s) exactly (64 positions)."""


class SqueezeConv(nn.Module):
    """Squeeze ``(3, 16, 16) -> (12, 8, 8)`` and a 1x1 convolution ``W = U diag(s) V^T`` with
    :data:`CONV_SINGULAR_VALUES`: a 768 x 768 Jacobian, ``kron(W, I_64)`` up to a permutation,
    whose log-det is ``64 * sum(log s)`` (:func:`known_log_det`), computed by hand. Its exact
    log-det reference is a batched LU of 768 x 768 matrices: the case torch's batched CPU
    LAPACK gets wrong with more than one thread."""

    input_shape = (3, 16, 16)
    data_range = (0.0, 1.0)
    log_det_kind = "exact"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        u, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
        w = u @ torch.diag(torch.tensor(CONV_SINGULAR_VALUES, dtype=torch.float64)) @ v.T
        self.weight = nn.Parameter(w.float())
        self.register_buffer("inverse_weight", torch.linalg.inv(w).float())
        self.log_det = float(64 * sum(math.log(s) for s in CONV_SINGULAR_VALUES))

    @staticmethod
    def _squeeze(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)

    @staticmethod
    def _unsqueeze(y: torch.Tensor) -> torch.Tensor:
        b, c4, h2, w2 = y.shape
        return y.reshape(b, c4 // 4, 2, 2, h2, w2).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h2 * 2, w2 * 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.conv2d(self._squeeze(x), self.weight.view(12, 12, 1, 1))
        return y, torch.full((len(x),), self.log_det, dtype=x.dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._unsqueeze(F.conv2d(y, self.inverse_weight.view(12, 12, 1, 1)))


def known_log_det() -> float:
    """``64 * sum(log s)`` of :class:`SqueezeConv`."""
    return 64 * sum(math.log(s) for s in CONV_SINGULAR_VALUES)


def wrong_far() -> nn.Module:
    return WrongFar()


def pooling() -> nn.Module:
    return Pooling()


def grad_outputs() -> nn.Module:
    return GradOutputs()


def per_element_log_det() -> nn.Module:
    return PerElementLogDet()


def squeeze_conv() -> nn.Module:
    return SqueezeConv()
