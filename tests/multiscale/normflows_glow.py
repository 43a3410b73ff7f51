"""normflows' own Glow example (``nf.MultiscaleFlow``), at a CPU-cheap size by default.

The construction follows normflows' Glow example (3x32x32, ``L`` levels of ``K`` Glow blocks,
``Squeeze`` at the end of each level, ``Merge`` between levels, class-conditional priors).
"""

from __future__ import annotations

import normflows as nf
import torch
from torch import nn

SHAPE = (3, 8, 8)


def glow(
    levels: int = 2,
    steps: int = 2,
    hidden: int = 8,
    shape: tuple[int, int, int] = SHAPE,
    classes: int = 10,
    class_cond: bool = True,
    seed: int = 0,
) -> nf.MultiscaleFlow:
    """normflows' Glow example with ``levels`` (L), ``steps`` (K) and ``hidden`` channels."""
    torch.manual_seed(seed)
    channels, height, width = shape
    q0, merges, flows = [], [], []
    for i in range(levels):
        level: list[nn.Module] = [
            nf.flows.GlowBlock(channels * 2 ** (levels + 1 - i), hidden, split_mode="channel", scale=True)
            for _ in range(steps)
        ]
        level.append(nf.flows.Squeeze())
        flows.append(level)
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (channels * 2 ** (levels - i), height // 2 ** (levels - i), width // 2 ** (levels - i))
        else:
            latent = (channels * 2 ** (levels + 1), height // 2**levels, width // 2**levels)
        q0.append(
            nf.distributions.ClassCondDiagGaussian(latent, classes)
            if class_cond
            else nf.distributions.DiagGaussian(latent)
        )
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=class_cond)
    with torch.no_grad():  # the coupling nets' zero-initialized last convs, as after some training
        for net in model.modules():
            if isinstance(net, nf.nets.ConvNet2d):
                net.net[-1].weight.normal_(0.0, 0.02)
    with torch.no_grad():  # ActNorm initializes on its first batch; do it once, seeded
        model.inverse_and_log_det(torch.rand(16, *shape, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def build() -> nn.Module:
    """The example at L=2, K=2, hidden 8 on 3x8x8 (data in [0, 1])."""
    model = glow()
    model.input_shape = SHAPE
    return model


def build_unstable() -> nn.Module:
    """The same flow with the last conv of every coupling net scaled up by 1e3."""
    model = build()
    blow_up_couplings(model, 1e3)
    return model


def blow_up_couplings(model: nn.Module, factor: float) -> None:
    """Multiply the weights of every coupling network's convolutions by ``factor``."""
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, nf.flows.AffineCouplingBlock):
                for p in block.parameters():
                    p.mul_(factor)
