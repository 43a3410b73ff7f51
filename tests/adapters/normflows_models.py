"""normflows models for the adapter tests (normflows' forward is latent -> data)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import normflows as nf
from _common import FEATURES, blow_up


def build() -> nn.Module:
    """A NormalizingFlow: two affine coupling blocks with swaps (stable)."""
    torch.manual_seed(0)
    flows: list[nn.Module] = []
    for _ in range(2):
        flows.append(nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 16, 4], init_zeros=False)))
        flows.append(nf.flows.Permute(FEATURES, mode="swap"))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(FEATURES), flows)


def build_unstable() -> nn.Module:
    """The same flow with its coupling MLPs' weights multiplied by 1e3 (exp scale overflows)."""
    model = build()
    for flow in model.flows:
        if isinstance(flow, nf.flows.AffineCouplingBlock):
            blow_up(flow, 1e3)
    return model
