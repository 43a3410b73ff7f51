"""Helpers shared by the library factories: seeding and the "huge weights" blow-up."""

from __future__ import annotations

import torch
from torch import nn

FEATURES = 4
"""Every library model here maps R^4 to R^4."""


def blow_up(module: nn.Module, factor: float) -> nn.Module:
    """Multiply every parameter of ``module`` by ``factor`` (in place) and return it.

    Applied to the conditioner of an affine coupling, the shift grows to ~``factor^depth``: the
    forward pass adds a huge number to ``x``, and the inverse subtracts it again, losing the
    digits of ``x`` to float32 cancellation (Behrmann et al. 2021, section 4).
    """
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(factor)
    return module
