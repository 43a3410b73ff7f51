"""A small seeded ReLU net (float64) for the bound-propagation tests."""

from __future__ import annotations

import torch
from torch import nn


def relu_net(gen: torch.Generator, width: int, dim: int = 3, out: int | None = None) -> nn.Sequential:
    """``dim -> width -> width -> out`` (``out`` defaults to ``dim``), ReLU between, weights
    ``N(0, 1 / fan_in)`` and biases ``N(0, 1)`` drawn from ``gen``."""
    net = nn.Sequential(
        nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out or dim)
    )
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / layer.in_features**0.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return net.double()
