"""Known-answer models for what an audit cannot measure: a no-grad inverse, compounding block
errors, a model that rewrites itself on its first batch.

Only torch is imported here, so the CLI can load this file by path
(``innaudit run tests/audits/measured_models.py:NAME``)."""

from __future__ import annotations

import math

import torch
from torch import nn


def _rotation(dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def _matrix(svals: torch.Tensor, seed: int) -> torch.Tensor:
    """``U diag(svals) V^T`` with random orthogonal ``U``, ``V`` (float64)."""
    n = len(svals)
    return _rotation(n, seed) @ torch.diag(svals.double()) @ _rotation(n, seed + 1).T


class NoGradInverseLinear(nn.Module):
    """``z = A x`` with singular values ``logspace(-3, 2)`` (so ``sigma_max(J_F^-1) = 1e3``),
    whose inverse runs under ``torch.no_grad()``, as samplers often do."""

    input_shape = (6,)
    data_range = (0.0, 1.0)

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        a = _matrix(torch.logspace(-3, 2, dim, dtype=torch.float64), 3)
        self.weight = nn.Parameter(a.float())
        self.register_buffer("inv", torch.linalg.inv(a).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    @torch.no_grad()
    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.inv.T


class CondBlock(nn.Module):
    """``y = M x`` with ``M`` of condition ``kappa`` (singular values ``sqrt(kappa)``, ``1 /
    sqrt(kappa)``, and 1 in between); the inverse is the float32 matrix ``M^-1``."""

    def __init__(self, dim: int, kappa: float, seed: int) -> None:
        super().__init__()
        s = torch.ones(dim, dtype=torch.float64)
        s[0], s[-1] = math.sqrt(kappa), 1 / math.sqrt(kappa)
        m = _matrix(s, seed)
        self.weight = nn.Parameter(m.float())
        self.register_buffer("inv", torch.linalg.inv(m).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.inv.T


class CondChain(nn.Module):
    """Ten :class:`CondBlock` of condition 30: each round-trips to about 1e-6, while the
    chain's inverse amplifies the latent's rounding by up to ``30^10``."""

    input_shape = (4,)
    data_range = (0.0, 1.0)

    def __init__(self, count: int = 10, kappa: float = 30.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(CondBlock(4, kappa, 10 * i) for i in range(count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for b in reversed(self.blocks):
            z = b.inverse(z)
        return z


class LazyActNorm(nn.Module):
    """ActNorm with data-dependent initialization: the first forward pass sets ``bias`` and
    ``log_scale`` from its batch, unless the plain attribute ``initialized`` is set (a state
    dict does not carry it)."""

    input_shape = (4,)
    data_range = (0.0, 1.0)

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.initialized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            with torch.no_grad():
                self.bias.copy_(-x.mean(0))
                self.log_scale.copy_(-torch.log(x.std(0, unbiased=False) + 1e-6))
            self.initialized = True
        return (x + self.bias) * torch.exp(self.log_scale)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.exp(-self.log_scale) - self.bias


def nograd_inverse() -> nn.Module:
    """Factory for :class:`NoGradInverseLinear`."""
    return NoGradInverseLinear()


def chain() -> nn.Module:
    """Factory for :class:`CondChain`."""
    return CondChain()


def lazy_actnorm() -> nn.Module:
    """Factory for :class:`LazyActNorm` (``initialized`` unset)."""
    return LazyActNorm()


class Scale(nn.Module):
    """``z = 2 x``, declaring no data domain (it comes from ``--data``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / 2


def no_domain() -> nn.Module:
    """Factory for :class:`Scale`."""
    return Scale()


class ExpBlock(nn.Module):
    """``y = exp(x)``, inverse ``log(y)``: exact to rounding, NaN for a non-positive input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log(z)


class ExpThenChain(CondChain):
    """:class:`ExpBlock` then the ten blocks of :class:`CondChain`: every block round-trips to
    rounding, but the chain's error reaches the log with negative values, so the whole round
    trip is NaN on some samples."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks.insert(0, ExpBlock())
