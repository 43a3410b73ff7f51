"""An nflows ``MultiscaleCompositeTransform`` on 3x8x8 images: two levels."""

from __future__ import annotations

import torch
from nflows import transforms
from torch import nn

SHAPE = (3, 8, 8)


class _Net(nn.Module):
    """A small conv net taking nflows' ``(x, context)`` call."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, c_out, 3, padding=1))
        with torch.no_grad():
            self.net[-1].weight.mul_(0.1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def _level(channels: int) -> transforms.Transform:
    return transforms.CompositeTransform(
        [
            transforms.SqueezeTransform(),
            transforms.AffineCouplingTransform(_mask(4 * channels), _Net),
        ]
    )


def _mask(channels: int) -> torch.Tensor:
    mask = torch.zeros(channels)
    mask[::2] = 1
    return mask


def build() -> nn.Module:
    """Level 0: squeeze + affine coupling on 12x4x4, split; level 1: the same on 24x2x2."""
    torch.manual_seed(0)
    multiscale = transforms.MultiscaleCompositeTransform(num_transforms=2)
    shape = SHAPE
    for _ in range(2):
        shape = multiscale.add_transform(_level(shape[0]), (shape[0] * 4, shape[1] // 2, shape[2] // 2))
    multiscale.input_shape = SHAPE
    return multiscale.eval()
