"""Known-answer models for the precision audit, and factories for
``innaudit run tests/audits/precision_models.py:NAME``.

Only torch is imported here, so the CLI can load this file by path from anywhere."""

from __future__ import annotations

import torch
from torch import nn

DIM = 16
COND = 1e3


class ConditionedLinear(nn.Module):
    """``z = A x`` with ``A = U diag(s) V^T``, ``s`` log-spaced from 1 down to ``1 / cond``, stored
    in float32 with its inverse. The round trip's relative error is about ``cond * u``."""

    def __init__(self, dim: int = DIM, cond: float = COND, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        s = torch.logspace(0.0, -torch.log10(torch.tensor(cond)).item(), dim, dtype=torch.float64)
        a = u @ torch.diag(s) @ v.T
        self.weight = nn.Parameter(a.float())
        self.register_buffer("inverse_weight", torch.linalg.inv(a).float())
        self.input_shape = (dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.inverse_weight.T


class BigScale(nn.Module):
    """``z = 1e4 x`` on ``[0, 10]^2``: perfectly conditioned, but ``z`` leaves float16's range
    (max 65504) where an element exceeds 6.55 (57 % of uniform draws); bfloat16 has float32's
    range and round-trips it."""

    input_shape = (2,)

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1e4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale


class WithSlogdet(ConditionedLinear):
    """Returns ``(z, log|det A|)`` with ``torch.linalg.slogdet``, which has no float16 or bfloat16
    kernel: true casts to those cannot run (autocast keeps the weight in float32 and can)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return x @ self.weight.T, torch.linalg.slogdet(self.weight)[1].expand(len(x))


def conditioned_linear() -> ConditionedLinear:
    """Factory for the CLI."""
    return ConditionedLinear()


class FixedPoint(nn.Module):
    """``z = x + 0.5 tanh(x)``, inverted by the fixed point ``x = z - 0.5 tanh(x)`` (a
    contraction) to tolerance 1e-6 within 60 iterations: reachable in float32 only."""

    input_shape = (2,)
    inverse_kind = "iterative"
    inverse_tolerance = 1e-6
    inverse_max_iter = 60

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gain * torch.tanh(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for _ in range(self.inverse_max_iter):
            new = z - self.gain * torch.tanh(x)
            if bool(((new - x).abs() <= self.inverse_tolerance).all()):
                return new
            x = new
        return x
