"""Residual branches of library blocks, for the certified bounds of :mod:`innaudit.linalg.lipschitz`.

A residual block ``y = x + g(x)`` inverts by a fixed point that converges when ``Lip(g) < 1``.
The libraries enforce that with power-iteration estimates, which are lower bounds of each
layer's norm; here ``g`` is rebuilt from plain layers with the weights the block applies in eval,
so its Lipschitz constant can be certified, and the library's own estimate is computed the way
the library computes it, without touching the block:

- normflows ``Residual`` (``iResBlock`` around ``LipschitzMLP`` / ``LipschitzCNN``, vendored from
  rtqichen/residual-flows): each ``InducedNormLinear`` / ``InducedNormConv2d`` applies
  ``W / max(1, sigma / coeff)`` with ``sigma = u^T W v`` from its stored vectors (not updated in
  eval); the library believes that layer's norm is ``min(sigma, coeff)``. Its ``Swish``,
  ``x sigmoid(beta x) / 1.1``, has slope in ``[-0.0999, 1.0999] / 1.1`` for every ``beta``.
  Only the L2 case (``domain = codomain = 2``) has an L2 estimate.
- FrEIA ``IResNetLayer``: ``residual`` is plain ``Linear`` / ``Conv2d`` (padding 1) and ``ELU``.
  Its ``lipschitz_correction()`` estimates each layer by ``lipschitz_iterations`` power steps on
  ``lipschitz_batchsize`` random vectors, for convolutions with ``conv2d(x, W)`` at padding 0:
  a different operator from the padded layer, whose norm it underestimates. The estimate here
  repeats that procedure on a copy of the vectors, from a fixed seed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innaudit.linalg.lipschitz import ResidualBranch, register_residual
from innaudit.loading.adapters._common import from_library

__all__ = ["DeclaredSlopes", "freia_estimate"]

SWISH_SLOPES = (-0.0999 / 1.1, 1.0999 / 1.1)


class DeclaredSlopes(nn.Module):
    """An activation with a declared slope range (``slope_range()``), applied as ``inner``."""

    def __init__(self, inner: nn.Module, low: float, high: float) -> None:
        super().__init__()
        self.inner = inner
        self.low, self.high = float(low), float(high)

    def slope_range(self) -> tuple[float, float]:
        return self.low, self.high

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)


def _normflows_layers(net: nn.Module) -> list[nn.Module]:
    inner = getattr(net, "net", net)
    return list(inner) if isinstance(inner, nn.Sequential) else [inner]


def _sigma(layer: Any) -> Tensor:
    """``u^T W v`` with the stored vectors, as ``compute_weight(update=False)`` has it."""
    weight = layer.weight.detach()
    if type(layer).__name__ == "InducedNormLinear":
        return torch.dot(layer.u, torch.mv(weight, layer.v))
    if tuple(layer.kernel_size) == (1, 1):
        return torch.dot(layer.u, torch.mv(weight.view(layer.out_channels, layer.in_channels), layer.v))
    c, h, w = layer.in_channels, int(layer.spatial_dims[0].item()), int(layer.spatial_dims[1].item())
    out = F.conv2d(layer.v.view(1, c, h, w), weight, stride=layer.stride, padding=layer.padding)
    return torch.dot(layer.u.view(-1), out.view(-1))


def _effective(layer: Any) -> tuple[nn.Module, float | None]:
    """A plain layer with the weight normflows applies in eval, and the norm it believes."""
    with torch.no_grad():
        sigma = _sigma(layer)
        weight = layer.weight.detach() / torch.clamp(sigma / layer.coeff, min=1.0)
    l2 = layer.domain == 2 and layer.codomain == 2 and not torch.is_tensor(layer.domain)
    believed = min(float(sigma), float(layer.coeff)) if l2 else None
    if type(layer).__name__ == "InducedNormLinear":
        plain: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    else:
        plain = nn.Conv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, bias=False
        )
    plain.weight = nn.Parameter(weight.clone(), requires_grad=False)
    return plain, believed


def _normflows_residual(block: Any, in_shape: tuple[int, ...]) -> ResidualBranch:
    layers: list[nn.Module] = []
    estimate: float | None = 1.0
    for layer in _normflows_layers(block.iresblock.nnet):
        name = type(layer).__name__
        if name in ("InducedNormLinear", "InducedNormConv2d"):
            plain, believed = _effective(layer)
            layers.append(plain)
            estimate = estimate * believed if (estimate is not None and believed is not None) else None
        elif name == "Swish":
            layers.append(DeclaredSlopes(layer, *SWISH_SLOPES))
            estimate = estimate * 1.0 if estimate is not None else None
        else:
            layers.append(layer)
    how = "normflows' stored power-iteration sigma of each layer: ||W_eff|| believed min(sigma, coeff)"
    return ResidualBranch(tuple(layers), estimate, how, inverted=not bool(getattr(block, "reverse", True)))


def freia_estimate(block: Any, generator: torch.Generator) -> float:
    """FrEIA's ``lipschitz_correction()`` estimate of ``Lip(g)`` (the product of its per-layer
    power-iteration norms), computed without changing the block."""
    total = 1.0
    dims = tuple(block.dims_in[1:])
    with torch.no_grad():
        for layer in block.layers:
            w = layer.weight.detach()
            x = torch.randn(block.lipschitz_batchsize, w.shape[1], *dims, generator=generator).to(w)
            if not dims:
                for _ in range(block.lipschitz_iterations):
                    x = w.t().matmul(w.matmul(x.unsqueeze(-1))).squeeze(-1)
                norm = (w.matmul(x.unsqueeze(-1)).squeeze(-1).norm(dim=1) / x.norm(dim=1)).max()
            else:
                for _ in range(block.lipschitz_iterations):
                    x = F.conv_transpose2d(F.conv2d(x, w), w)
                y = F.conv2d(x, w).reshape(len(x), -1)
                norm = (y.norm(dim=1) / x.reshape(len(x), -1).norm(dim=1)).max()
            total *= float(norm)
    return total


def _freia_residual(block: Any, in_shape: tuple[int, ...]) -> ResidualBranch:
    estimate = freia_estimate(block, torch.Generator().manual_seed(0))
    how = f"FrEIA lipschitz_correction(): {block.lipschitz_iterations} power steps per layer" + (
        ", convolutions at padding 0 (the layers pad by 1)" if len(block.dims_in) > 1 else ""
    )
    layers = tuple(block.residual)
    if not all(math.isfinite(float(p.detach().abs().max())) for p in block.residual.parameters()):
        how += "; non-finite weights"
    return ResidualBranch(layers, estimate, how)


register_residual(
    lambda b: type(b).__name__ == "Residual" and from_library(b, "normflows") and hasattr(b, "iresblock"),
    _normflows_residual,
)
register_residual(lambda b: type(b).__name__ == "IResNetLayer" and from_library(b, "FrEIA"), _freia_residual)
