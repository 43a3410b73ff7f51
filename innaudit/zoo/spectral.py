"""The layers of a residual block: LipSwish and spectrally normalized linear / conv layers.

Spectral normalization (Miyato et al. 2018, as in the residual-flows code): a power-iteration
estimate ``sigma`` of ``||W||_2`` is kept in buffers; the weight used is
``W / max(1, sigma / c)``. Training refreshes the estimate with ``power_iterations`` steps per
call; eval uses the stored buffers, so eval is deterministic. ``calibrate()`` sets ``sigma`` to
the exact spectral norm (by SVD of the operator), so a saved model satisfies ``||W|| <= c``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SWISH_MAX_SLOPE", "SWISH_MIN_SLOPE", "LipSwish", "SpectralConv2d", "SpectralLayer", "SpectralLinear"]

SWISH_MAX_SLOPE = 1.0999  # max_x d/dx [x sigmoid(x)] = 1.09984 near x = 2.40, rounded up
SWISH_MIN_SLOPE = -0.0999  # min_x d/dx [x sigmoid(x)] = -0.09984 near x = -2.40, rounded down


class LipSwish(nn.Module):
    """``swish(x) / 1.1 = x sigmoid(x) / 1.1``: smooth, Lipschitz constant <= 1 (Chen et al. 2019)."""

    lipschitz = SWISH_MAX_SLOPE / 1.1

    @staticmethod
    def slope_range() -> tuple[float, float]:
        """The derivative's range, ``[-0.0999, 1.0999] / 1.1`` (rounded outward)."""
        return SWISH_MIN_SLOPE / 1.1, SWISH_MAX_SLOPE / 1.1

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x) / 1.1

    @staticmethod
    def derivative(x: Tensor) -> Tensor:
        """Elementwise slope ``(s + x s (1 - s)) / 1.1`` with ``s = sigmoid(x)``."""
        s = torch.sigmoid(x)
        return (s + x * s * (1 - s)) / 1.1


class SpectralLayer(nn.Module):
    """Shared spectral-normalization logic; subclasses define the operator and its adjoint."""

    weight: Tensor
    sigma: Tensor
    u: Tensor
    v: Tensor

    def _init_parameters(self, shape: tuple[int, ...], generator: torch.Generator, zero: bool) -> None:
        """``weight`` of ``shape`` and ``bias`` uniform in +-1/sqrt(fan_in) (PyTorch's default
        bound); ``zero`` scales the weight by 1e-3 and zeroes the bias (a near-identity block)."""
        bound = 1.0 / math.sqrt(math.prod(shape[1:]))
        weight = torch.empty(shape).uniform_(-bound, bound, generator=generator)
        bias = torch.empty(shape[0]).uniform_(-bound, bound, generator=generator)
        if zero:
            weight.mul_(1e-3)
            bias.zero_()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def __init__(self, coeff: float, power_iterations: int) -> None:
        super().__init__()
        if not 0.0 < coeff < 1.0:
            raise ValueError(f"spectral coefficient must be in (0, 1); got {coeff}")
        self.coeff = float(coeff)
        self.power_iterations = int(power_iterations)

    def _apply_op(self, weight: Tensor, v: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply_adjoint(self, weight: Tensor, u: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def power_iterate(self, steps: int) -> None:
        """``steps`` power iterations on the raw weight; updates ``u``, ``v`` and ``sigma``."""
        u, v = self.u, self.v
        for _ in range(steps):
            v = F.normalize(self._apply_adjoint(self.weight, u).flatten(), dim=0).view_as(v)
            u = F.normalize(self._apply_op(self.weight, v).flatten(), dim=0).view_as(u)
        self.u.copy_(u)
        self.v.copy_(v)
        self.sigma.copy_((u * self._apply_op(self.weight, v)).sum())

    def normalized_weight(self) -> Tensor:
        """``W / max(1, sigma / c)``: the weight actually applied."""
        if self.training and self.power_iterations > 0:
            self.power_iterate(self.power_iterations)
        sigma = (self.u * self._apply_op(self.weight, self.v)).sum() if self.training else self.sigma
        return self.weight / torch.clamp(sigma / self.coeff, min=1.0)

    @torch.no_grad()
    def calibrate(self) -> None:
        """Set ``sigma`` to the exact spectral norm of the raw weight (an SVD), so that the
        normalized weight has norm exactly ``min(sigma, c)``."""
        self.sigma.copy_(self.exact_norm(self.weight))

    @torch.no_grad()
    def exact_norm(self, weight: Tensor | None = None) -> Tensor:
        """Exact operator 2-norm of ``weight`` (default: the normalized weight in eval)."""
        if weight is None:
            was = self.training
            self.eval()
            weight = self.normalized_weight()
            self.train(was)
        return torch.linalg.matrix_norm(self.matrix(weight).double(), ord=2).to(weight.dtype)

    def matrix(self, weight: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class SpectralLinear(SpectralLayer):
    """``Linear`` whose weight is spectrally normalized to norm <= ``coeff``."""

    def __init__(
        self, c_in: int, c_out: int, coeff: float, power_iterations: int, generator: torch.Generator, zero: bool = False
    ) -> None:
        super().__init__(coeff, power_iterations)
        self._init_parameters((c_out, c_in), generator, zero)
        self.register_buffer("u", F.normalize(torch.randn(c_out, generator=generator), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(c_in, generator=generator), dim=0))
        self.register_buffer("sigma", torch.ones(()))
        self.power_iterate(50)

    def _apply_op(self, weight: Tensor, v: Tensor) -> Tensor:
        return weight @ v

    def _apply_adjoint(self, weight: Tensor, u: Tensor) -> Tensor:
        return weight.t() @ u

    def matrix(self, weight: Tensor) -> Tensor:
        return weight

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SpectralConv2d(SpectralLayer):
    """``Conv2d`` (stride 1, same padding) whose operator on inputs of ``spatial`` size is
    spectrally normalized to norm <= ``coeff``; the power iteration runs on the conv operator
    itself (conv / transposed conv), not on the reshaped kernel."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        spatial: tuple[int, int],
        coeff: float,
        power_iterations: int,
        generator: torch.Generator,
        zero: bool = False,
    ) -> None:
        super().__init__(coeff, power_iterations)
        self.padding = kernel // 2
        self.spatial = tuple(int(s) for s in spatial)
        self._init_parameters((c_out, c_in, kernel, kernel), generator, zero)
        self.register_buffer(
            "u",
            F.normalize(torch.randn(c_out * math.prod(self.spatial), generator=generator), dim=0).view(
                1, c_out, *self.spatial
            ),
        )
        self.register_buffer(
            "v",
            F.normalize(torch.randn(c_in * math.prod(self.spatial), generator=generator), dim=0).view(
                1, c_in, *self.spatial
            ),
        )
        self.register_buffer("sigma", torch.ones(()))
        self.power_iterate(50)

    def _apply_op(self, weight: Tensor, v: Tensor) -> Tensor:
        return F.conv2d(v, weight, padding=self.padding)

    def _apply_adjoint(self, weight: Tensor, u: Tensor) -> Tensor:
        return F.conv_transpose2d(u, weight, padding=self.padding)

    def matrix(self, weight: Tensor) -> Tensor:
        c_in = weight.shape[1]
        n = c_in * math.prod(self.spatial)
        basis = torch.eye(n, dtype=weight.dtype, device=weight.device).view(n, c_in, *self.spatial)
        return F.conv2d(basis, weight, padding=self.padding).flatten(1).t()

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)
