"""A small Glow written in the rosinality glow-pytorch convention (written here for the tests).

``forward(x) -> (log_p, logdet, z_outs)``; ``reverse(z_list, reconstruct=True)`` is the exact
inverse; each level is a ``Block`` with ``forward(h) -> (out, logdet, log_p, z_new)`` and
``reverse(out, eps, reconstruct)``; a learned prior (a conv of the kept half) scores ``z_new``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SHAPE = (3, 8, 8)


def _log_normal(x: Tensor, mean: Tensor, log_sd: Tensor) -> Tensor:
    return -0.5 * math.log(2 * math.pi) - log_sd - 0.5 * (x - mean) ** 2 / torch.exp(2 * log_sd)


class ActNorm(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(0.1 * torch.randn(1, channels, 1, 1))
        self.log_scale = nn.Parameter(0.1 * torch.randn(1, channels, 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ld = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return torch.exp(self.log_scale) * (x + self.loc), ld

    def reverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.loc


class InvConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        self.weight = nn.Parameter(q)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ld = x.shape[2] * x.shape[3] * torch.linalg.slogdet(self.weight)[1]
        return torch.einsum("ij,bjhw->bihw", self.weight, x), ld

    def reverse(self, y: Tensor) -> Tensor:
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.weight), y)


class Coupling(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels // 2, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 3, padding=1)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x.chunk(2, 1)
        log_s, t = self.net(a).chunk(2, 1)
        s = torch.sigmoid(log_s + 2)
        return torch.cat([a, (b + t) * s], 1), torch.log(s).flatten(1).sum(1)

    def reverse(self, y: Tensor) -> Tensor:
        a, b = y.chunk(2, 1)
        log_s, t = self.net(a).chunk(2, 1)
        return torch.cat([a, b / torch.sigmoid(log_s + 2) - t], 1)


class Flow(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.parts = nn.ModuleList([ActNorm(channels), InvConv(channels), Coupling(channels, hidden)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = torch.zeros(len(x))
        for part in self.parts:
            x, ld = part(x)
            total = total + ld
        return x, total

    def reverse(self, y: Tensor) -> Tensor:
        for part in reversed(self.parts):
            y = part.reverse(y)
        return y


def squeeze(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


class Block(nn.Module):
    def __init__(self, channels: int, steps: int, hidden: int, split: bool) -> None:
        super().__init__()
        self.flows = nn.ModuleList([Flow(channels * 4, hidden) for _ in range(steps)])
        self.split = split
        self.prior = nn.Conv2d(channels * 2, channels * 4, 3, padding=1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out, logdet = squeeze(h), torch.zeros(len(h))
        for flow in self.flows:
            out, ld = flow(out)
            logdet = logdet + ld
        if self.split:
            out, z_new = out.chunk(2, 1)
            mean, log_sd = self.prior(out).chunk(2, 1)
        else:
            z_new = out
            mean, log_sd = torch.zeros_like(out), torch.zeros_like(out)
        return out, logdet, _log_normal(z_new, mean, log_sd).flatten(1).sum(1), z_new

    def reverse(self, output: Tensor, eps: Tensor, reconstruct: bool = False) -> Tensor:
        if reconstruct:
            x = torch.cat([output, eps], 1) if self.split else eps
        elif self.split:
            mean, log_sd = self.prior(output).chunk(2, 1)
            x = torch.cat([output, mean + torch.exp(log_sd) * eps], 1)
        else:
            x = eps
        for flow in reversed(self.flows):
            x = flow.reverse(x)
        return unsqueeze(x)


class Glow(nn.Module):
    input_shape = SHAPE

    def __init__(self, levels: int = 2, steps: int = 2, hidden: int = 16) -> None:
        super().__init__()
        channels, blocks = SHAPE[0], []
        for i in range(levels):
            split = i < levels - 1
            blocks.append(Block(channels, steps, hidden, split))
            channels = channels * 2 if split else channels * 4
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        log_p, logdet, out, z_outs = torch.zeros(len(x)), torch.zeros(len(x)), x, []
        for block in self.blocks:
            out, ld, lp, z_new = block(out)
            z_outs.append(z_new)
            logdet, log_p = logdet + ld, log_p + lp
        return log_p, logdet, z_outs

    def reverse(self, z_list: list[Tensor], reconstruct: bool = False) -> Tensor:
        x = z_list[-1]
        for i, block in enumerate(reversed(self.blocks)):
            eps = z_list[-(i + 1)]
            x = block.reverse(eps if i == 0 else x, eps, reconstruct=reconstruct)
        return x


def build() -> nn.Module:
    """Two levels of two flow steps on 3x8x8, seeded."""
    torch.manual_seed(0)
    return Glow().eval()
