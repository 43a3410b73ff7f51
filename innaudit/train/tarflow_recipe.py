"""The ``patches-tarflow`` recipes: a small TarFlow / STARFlow on 3x32x32 natural-image patches.

Maximum likelihood with a standard-normal prior on ``z`` and the exact (summed) log-det, AdamW
(``betas = (0.9, 0.95)``, weight decay 1e-4, as TarFlow trains), on uniformly dequantized
``patches:train`` with random horizontal flips, one thread, deterministic.

- ``patches-tarflow``: STARFlow's guards, softplus scale and soft clip ``c = 4``; learning
  rate 1e-3.
- ``patches-tarflow-unstable``: the same architecture with TarFlow's unbounded ``exp`` scale,
  no soft clip, and a learning rate five times higher, so the predicted log-scales and the
  sensitivity of each token's prediction to the tokens before it grow unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.train.common import Progress, Recipe, TrainedModel, bits_per_dim, gaussian_nll, single_threaded
from innaudit.zoo.tarflow import PATCHES_ARCHITECTURE

__all__ = ["TARFLOW_RECIPES", "TarFlowSetup", "train_patches_tarflow"]


@dataclass(frozen=True)
class TarFlowSetup:
    """Hyperparameters of one ``patches-tarflow`` run."""

    config: dict[str, Any]
    steps: int
    batch_size: int
    lr: float


def _dequantize(x: Tensor, domain: DataDomain, generator: torch.Generator) -> Tensor:
    return x + torch.rand(x.shape, generator=generator, dtype=x.dtype) * (domain.bin_width or 0.0)


@torch.no_grad()
def _evaluate(model: nn.Module, data: Tensor, domain: DataDomain, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    nll = [gaussian_nll(*model(_dequantize(data[i : i + 128], domain, generator))) for i in range(0, len(data), 128)]
    return bits_per_dim(torch.cat(nll), domain)


def _fit(
    model: nn.Module, data: Tensor, domain: DataDomain, setup: TarFlowSetup, seed: int, progress: Progress | None
) -> int:
    """AdamW on the NLL of random dequantized, randomly flipped minibatches; returns the number
    of steps skipped because their loss or gradient was not finite."""
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=setup.lr, betas=(0.9, 0.95), weight_decay=1e-4)
    skipped = 0
    for step in range(setup.steps):
        index = torch.randint(len(data), (setup.batch_size,), generator=generator)
        x = data[index]
        flip = torch.rand(setup.batch_size, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = gaussian_nll(*model(_dequantize(x, domain, generator))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if torch.isfinite(loss) and all(bool(torch.isfinite(g).all()) for g in grads):
            optimizer.step()
        else:
            skipped += 1
        if progress is not None:
            progress(step + 1, setup.steps)
    return skipped


def train_patches_tarflow(
    recipe: str, setup: TarFlowSetup, seed: int, progress: Progress | None = None, steps: int | None = None
) -> TrainedModel:
    """Train ``setup`` on ``patches:train``; ``steps`` overrides its number of steps."""
    from innaudit import zoo
    from innaudit.data.patches import PATCHES_DOMAIN, load_patches

    count = setup.steps if steps is None else int(steps)
    train, test = (torch.from_numpy(load_patches(s)) for s in ("train", "test"))
    config = {**setup.config, "seed": int(seed)}
    with single_threaded():
        torch.manual_seed(seed)
        model = zoo.build("tarflow", config)
        model.train()
        skipped = _fit(
            model, train, PATCHES_DOMAIN, TarFlowSetup(config, count, setup.batch_size, setup.lr), seed, progress
        )
        model.eval()
        provenance = {
            "recipe": recipe,
            "seed": int(seed),
            "steps": count,
            "batch_size": setup.batch_size,
            "lr": setup.lr,
            "optimizer": "adamw (0.9, 0.95), weight decay 1e-4",
            "augmentation": "horizontal flips",
            "skipped_nonfinite_steps": skipped,
            "train_nll_bits_per_dim": _evaluate(model, train, PATCHES_DOMAIN, seed + 2),
            "test_nll_bits_per_dim": _evaluate(model, test, PATCHES_DOMAIN, seed + 3),
            "torch": str(torch.__version__),
        }
    return TrainedModel(model, "tarflow", config, PATCHES_DOMAIN, provenance)


ARCHITECTURE: dict[str, Any] = dict(PATCHES_ARCHITECTURE)
STEPS, BATCH = 1000, 32
STABLE = TarFlowSetup({**ARCHITECTURE, "scale": "softplus", "soft_clip": 4.0}, STEPS, BATCH, 1e-3)
UNSTABLE = TarFlowSetup({**ARCHITECTURE, "scale": "exp", "soft_clip": 0.0}, STEPS, BATCH, 5e-3)


def _recipe(name: str, description: str, setup: TarFlowSetup) -> Recipe:
    def function(seed: int, progress: Progress | None = None, steps: int | None = None) -> TrainedModel:
        return train_patches_tarflow(name, setup, seed, progress, steps)

    return Recipe(name, description, function)


TARFLOW_RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        _recipe(
            "patches-tarflow",
            "TarFlow with STARFlow's guards (softplus scale, soft clip 4): 4 causal-transformer "
            "blocks over the 64 4x4 patches of 3x32x32 natural-image crops (needs innaudit[images])",
            STABLE,
        ),
        _recipe(
            "patches-tarflow-unstable",
            "its unstable twin: TarFlow's unbounded exp scale, no soft clip, learning rate 5e-3 "
            "(needs innaudit[images])",
            UNSTABLE,
        ),
    )
}
