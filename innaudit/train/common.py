"""What every training recipe shares: the recipe and result types, the Gaussian NLL, bits per
dimension, and Glow's data-dependent ActNorm initialization."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain

__all__ = ["Progress", "Recipe", "TrainedModel", "bits_per_dim", "gaussian_nll", "init_actnorm", "single_threaded"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainedModel:
    """A trained zoo model and everything a native checkpoint stores about it."""

    module: nn.Module
    architecture: str  # zoo name
    config: dict[str, Any]  # zoo kwargs, plain data
    domain: DataDomain
    provenance: dict[str, Any]  # recipe, seed, steps, final train/test NLL in bits/dim, ...


@dataclass(frozen=True)
class Recipe:
    """A named training recipe; ``function(seed, progress, steps)`` trains and returns a model."""

    name: str
    description: str
    function: Callable[[int, Progress | None, int | None], TrainedModel]


def gaussian_nll(z: Tensor, log_det: Tensor) -> Tensor:
    """Per-sample ``-log p(x) = 0.5 ||z||^2 + D/2 log(2 pi) - log_det`` in nats."""
    flat = z.flatten(1)
    return 0.5 * flat.pow(2).sum(1) + 0.5 * flat.shape[1] * math.log(2 * math.pi) - log_det


def bits_per_dim(nll_nats: Tensor, domain: DataDomain) -> float:
    """Mean discrete NLL in bits/dim for data dequantized over bins of ``domain.bin_width``."""
    bin_width = domain.bin_width or 1.0
    per_dim = nll_nats.mean().item() / domain.numel + math.log(1.0 / bin_width)
    return per_dim / math.log(2.0)


@torch.no_grad()
def init_actnorm(model: nn.Module, batch: Tensor) -> None:
    """Glow's data-dependent ActNorm init: each ActNorm gives ``batch`` zero mean, unit variance
    per channel, given the blocks before it. Sets parameters only; no state in the module."""
    from innaudit.zoo.layers import ActNorm

    x = batch
    for block in cast(nn.ModuleList, model.blocks):
        if isinstance(block, ActNorm):
            dims = [0, *range(2, x.dim())]
            mean, std = x.mean(dims), x.std(dims)
            block.bias.copy_(-mean)
            block.log_scale.copy_(-torch.log(std + 1e-6))
        x, _ = block(x)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """One thread and ``torch.use_deterministic_algorithms(True)`` inside (what makes a recipe's
    bytes reproducible), the caller's settings after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
