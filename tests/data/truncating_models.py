"""A model whose first forward pass truncates its own ``--data`` file, as another process
rewriting the file mid-run would (issue 28, item 8)."""

from __future__ import annotations

import os

import torch
from torch import nn


class Truncating(nn.Module):
    """An invertible scaling ``z = 2 x`` that empties ``$INNAUDIT_TEST_TRUNCATE`` once."""

    input_shape = (64,)
    data_range = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.done = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.done:
            self.done = True
            with open(os.environ["INNAUDIT_TEST_TRUNCATE"], "r+b") as handle:
                handle.truncate(0)
        return 2 * x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / 2


def build() -> nn.Module:
    """The truncating model."""
    return Truncating()
