"""A linear map with chosen singular values (known answers for the Jacobian audits)."""

from __future__ import annotations

import torch
from torch import nn

from innaudit.core.domain import DataDomain
from innaudit.loading.adapt import adapt_module
from innaudit.model.contract import InvertibleModel

__all__ = ["Linear", "linear_model", "log_spaced"]


def log_spaced(dim: int, low: float = 1e-3, high: float = 1e2) -> torch.Tensor:
    """``dim`` singular values spaced evenly in log10 from ``high`` down to ``low``."""
    return torch.logspace(torch.log10(torch.tensor(high)), torch.log10(torch.tensor(low)), dim, dtype=torch.float64)


class Linear(nn.Module):
    """``z = A x`` with ``A = U diag(s) V^T`` for random orthogonal ``U``, ``V`` (seeded)."""

    log_det_kind = "exact"

    def __init__(self, singular_values: torch.Tensor, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        n = len(singular_values)
        g = torch.Generator().manual_seed(seed)
        u, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        a = u @ torch.diag(singular_values.double()) @ v.T
        self.weight = nn.Parameter(a.to(dtype))
        self.register_buffer("inverse_weight", torch.linalg.inv(a).to(dtype))
        self.input_shape = (n,)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.weight.T, torch.linalg.slogdet(self.weight)[1].expand(len(x))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.inverse_weight.T


def linear_model(singular_values: torch.Tensor, seed: int = 0, dtype: torch.dtype = torch.float64) -> InvertibleModel:
    """The :class:`Linear` map as an InvertibleModel on ``[0, 1]^n``."""
    module = Linear(singular_values, seed, dtype)
    return adapt_module(module, DataDomain(shape=(len(singular_values),)), {"test": "linear"})
