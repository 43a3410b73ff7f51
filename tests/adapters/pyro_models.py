"""pyro models for the adapter tests (pyro's forward is latent -> data, caches on by default)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pyro.distributions.transforms as T
from _common import FEATURES, blow_up


def build() -> nn.Module:
    """An affine coupling then a spline coupling, left with pyro's ``cache_size=1``."""
    torch.manual_seed(0)
    return T.ComposeTransformModule(
        [T.affine_coupling(FEATURES, hidden_dims=[16]), T.spline_coupling(FEATURES, hidden_dims=[16])]
    )


def build_unstable() -> nn.Module:
    """The same transform with its affine coupling's network weights multiplied by 1e3."""
    module = build()
    blow_up(module[0], 1e3)
    return module
