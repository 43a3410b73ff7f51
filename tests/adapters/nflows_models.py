"""nflows models for the adapter tests."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FEATURES, blow_up
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.nn.nets import ResidualNet
from nflows.transforms.base import CompositeTransform
from nflows.transforms.coupling import AffineCouplingTransform
from nflows.transforms.permutations import ReversePermutation


def _net(c_in: int, c_out: int) -> nn.Module:
    return ResidualNet(c_in, c_out, hidden_features=16, num_blocks=1)


def build() -> nn.Module:
    """A Flow: two affine couplings with reverse permutations (stable)."""
    torch.manual_seed(0)
    mask = torch.tensor([1, 1, 0, 0])
    layers = []
    for _ in range(2):
        layers += [AffineCouplingTransform(mask, _net), ReversePermutation(FEATURES)]
    return Flow(CompositeTransform(layers), StandardNormal([FEATURES]))


def build_unstable() -> nn.Module:
    """The same flow with its coupling conditioners' weights multiplied by 1e3."""
    flow = build()
    for t in flow._transform._transforms:
        if isinstance(t, AffineCouplingTransform):
            blow_up(t, 1e3)
    return flow
