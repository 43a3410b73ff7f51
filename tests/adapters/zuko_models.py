"""zuko models for the adapter tests."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zuko
from _common import FEATURES, blow_up


def build() -> nn.Module:
    """A RealNVP flow with three affine couplings (stable)."""
    torch.manual_seed(0)
    return zuko.flows.RealNVP(FEATURES, transforms=3, hidden_features=(16,))


def build_unstable() -> nn.Module:
    """The same flow with its hyper-networks' weights multiplied by 1e3: huge shifts."""
    flow = build()
    return blow_up(flow.transform, 1e3) and flow


def build_conditional() -> nn.Module:
    """A conditional NSF with a 2-feature context."""
    torch.manual_seed(1)
    return zuko.flows.NSF(FEATURES, context=2, transforms=2, hidden_features=(16,))
