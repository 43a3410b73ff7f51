"""The ``patches-glow`` recipe: a multi-scale Glow trained on 3x32x32 natural-image patches.

Maximum likelihood with a standard-normal prior on every level's latent (the learned split
priors are part of the bijection, see :mod:`innaudit.zoo.glow`), exact log-det, Adam, on
uniformly dequantized ``patches:train`` with random horizontal flips. Glow's data-dependent
ActNorm init runs once on 256 dequantized patches. Deterministic as the other recipes: one
thread, ``torch.use_deterministic_algorithms(True)``, seeded generators, no wall time stored.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.train.common import Progress, Recipe, TrainedModel, bits_per_dim, single_threaded

__all__ = ["GLOW_RECIPES", "glow_nll", "train_patches_glow", "train_patches_glow_additive"]

STEPS, BATCH, LR = 300, 32, 1e-3
CONFIG: dict[str, Any] = {
    "shape": [3, 32, 32],
    "levels": 3,
    "steps": 4,
    "hidden": 48,
    "coupling": "affine",
    "scale": "sigmoid",
    "actnorm": True,
    "split_prior": "learned",
}


def glow_nll(latents: list[Tensor], log_det: Tensor) -> Tensor:
    """Per-sample ``-log p(x) = sum_i (0.5 ||z_i||^2 + D_i/2 log(2 pi)) - log_det`` in nats."""
    flat = torch.cat([z.flatten(1) for z in latents], 1)
    return 0.5 * flat.pow(2).sum(1) + 0.5 * flat.shape[1] * math.log(2 * math.pi) - log_det


def _dequantize(x: Tensor, domain: DataDomain, generator: torch.Generator) -> Tensor:
    return x + torch.rand(x.shape, generator=generator, dtype=x.dtype) * (domain.bin_width or 0.0)


@torch.no_grad()
def _init_actnorm(model: nn.Module, batch: Tensor) -> None:
    """Each ActNorm gives ``batch`` zero mean, unit variance per channel (after the blocks before)."""
    from innaudit.zoo.glow import Split
    from innaudit.zoo.layers import ActNorm

    x = batch
    blocks: Any = model.blocks
    for block in blocks:
        if isinstance(block, ActNorm):
            dims = [0, *range(2, x.dim())]
            block.bias.copy_(-x.mean(dims))
            block.log_scale.copy_(-torch.log(x.std(dims) + 1e-6))
        x, _ = block(x)
        if isinstance(block, Split):
            x = x[0]


@torch.no_grad()
def _evaluate(model: nn.Module, data: Tensor, domain: DataDomain, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    total = [glow_nll(*model(_dequantize(data[i : i + 128], domain, generator))) for i in range(0, len(data), 128)]
    return bits_per_dim(torch.cat(total), domain)


def _fit(model: nn.Module, data: Tensor, domain: DataDomain, seed: int, steps: int, progress: Progress | None) -> None:
    generator = torch.Generator().manual_seed(seed + 1)
    _init_actnorm(model, _dequantize(data[:256], domain, generator))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for step in range(steps):
        index = torch.randint(len(data), (BATCH,), generator=generator)
        x = data[index]
        flip = torch.rand(BATCH, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = glow_nll(*model(_dequantize(x, domain, generator))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1, steps)


ADDITIVE = {**CONFIG, "coupling": "additive", "split_prior": "fixed"}
"""The bounded twin: additive coupling and a fixed standard-normal split prior, so every block
is globally bi-Lipschitz (:mod:`innaudit.zoo.glow`)."""


def train_patches_glow_additive(seed: int, progress: Progress | None = None, steps: int | None = None) -> TrainedModel:
    """Train the additive twin (:data:`ADDITIVE`) the same way as ``patches-glow``."""
    return train_patches_glow(seed, progress, steps, config=ADDITIVE, recipe="patches-glow-additive")


def train_patches_glow(
    seed: int,
    progress: Progress | None = None,
    steps: int | None = None,
    config: dict[str, Any] | None = None,
    recipe: str = "patches-glow",
) -> TrainedModel:
    """Train the multi-scale Glow of ``config`` (default :data:`CONFIG`) on ``patches:train``;
    ``steps`` overrides."""
    from innaudit import zoo
    from innaudit.data.patches import PATCHES_DOMAIN, load_patches

    steps = STEPS if steps is None else int(steps)
    train, test = (torch.from_numpy(load_patches(s)) for s in ("train", "test"))
    config = {**(config or CONFIG), "seed": int(seed)}
    with single_threaded():
        torch.manual_seed(seed)
        model = zoo.build("glow", config)
        model.train()
        _fit(model, train, PATCHES_DOMAIN, seed, steps, progress)
        model.eval()
        provenance = {
            "recipe": recipe,
            "seed": int(seed),
            "steps": steps,
            "batch_size": BATCH,
            "lr": LR,
            "optimizer": "adam",
            "augmentation": "horizontal flips",
            "train_nll_bits_per_dim": _evaluate(model, train, PATCHES_DOMAIN, seed + 2),
            "test_nll_bits_per_dim": _evaluate(model, test, PATCHES_DOMAIN, seed + 3),
            "torch": str(torch.__version__),
        }
    return TrainedModel(model, "glow", config, PATCHES_DOMAIN, provenance)


GLOW_RECIPES: dict[str, Recipe] = {
    "patches-glow": Recipe(
        "patches-glow",
        "multi-scale Glow (3 levels x 4 steps, affine sigmoid coupling, learned split priors) on "
        "3x32x32 patches of scikit-image's sample images (needs innaudit[images])",
        train_patches_glow,
    ),
    "patches-glow-additive": Recipe(
        "patches-glow-additive",
        "the patches-glow architecture with additive coupling and a fixed split prior (globally "
        "bi-Lipschitz), trained the same way (needs innaudit[images])",
        train_patches_glow_additive,
    ),
}
