"""Training recipes: named, seeded, deterministic ways to make the demo checkpoints.

A recipe trains a zoo model by maximum likelihood (standard-normal prior on ``z``, exact
log-det from the model, Adam) on uniformly dequantized data and returns a :class:`TrainedModel`
ready for :func:`innaudit.loading.native.save_checkpoint`. The NLL is reported in bits per
dimension of the discrete data: ``(-log p(x) / D + log(levels / width)) / log 2``.

Determinism: ``torch.manual_seed(seed)`` plus a local generator for data order and
dequantization noise, single-threaded ops and ``torch.use_deterministic_algorithms(True)``
during training, so the same seed gives bitwise the same weights on the same machine and torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import UsageError
from innaudit.train.common import (
    Progress,
    Recipe,
    TrainedModel,
    bits_per_dim,
    gaussian_nll,
    init_actnorm,
    single_threaded,
)
from innaudit.train.glow_recipe import GLOW_RECIPES
from innaudit.train.hooks import after_step
from innaudit.train.paper_recipes import PAPER_RECIPES
from innaudit.train.tarflow_recipe import TARFLOW_RECIPES

__all__ = ["RECIPES", "Recipe", "TrainedModel", "run_recipe"]


@dataclass(frozen=True)
class MLESetup:
    """Hyperparameters of one maximum-likelihood run on the 8x8 digits."""

    architecture: str
    config: dict[str, Any]
    steps: int
    batch_size: int
    lr: float
    actnorm_init: bool = True


def _dequantize(x: Tensor, domain: DataDomain, generator: torch.Generator) -> Tensor:
    """Add ``U(0, bin_width)`` noise to data sitting at the lower edges of its bins."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return x + noise * (domain.bin_width or 0.0)


@torch.no_grad()
def _evaluate(model: nn.Module, data: Tensor, domain: DataDomain, seed: int) -> float:
    """NLL in bits/dim of ``data`` under one fixed draw of dequantization noise."""
    generator = torch.Generator().manual_seed(seed)
    z, log_det = model(_dequantize(data, domain, generator))
    return bits_per_dim(gaussian_nll(z, log_det), domain)


def _fit(
    model: nn.Module, data: Tensor, domain: DataDomain, setup: MLESetup, seed: int, progress: Progress | None
) -> None:
    """Data-dependent ActNorm init on 512 dequantized samples (if ``setup.actnorm_init``), then
    Adam on the NLL of random dequantized minibatches for ``setup.steps`` steps."""
    generator = torch.Generator().manual_seed(seed + 1)
    if setup.actnorm_init:
        init_actnorm(model, _dequantize(data[:512], domain, generator))
    optimizer = torch.optim.Adam(model.parameters(), lr=setup.lr)
    after_step(model, domain, 0)
    for step in range(setup.steps):
        index = torch.randint(len(data), (setup.batch_size,), generator=generator)
        z, log_det = model(_dequantize(data[index], domain, generator))
        loss = gaussian_nll(z, log_det).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        after_step(model, domain, step + 1)
        if progress is not None:
            progress(step + 1, setup.steps)


def train_digits(
    recipe: str, setup: MLESetup, seed: int, progress: Progress | None = None, steps: int | None = None
) -> TrainedModel:
    """Train ``setup`` on the digits train split by maximum likelihood; ``steps`` overrides."""
    from innaudit import zoo
    from innaudit.data.digits import DIGITS_DOMAIN, load_digits

    if steps is not None:
        setup = dataclasses.replace(setup, steps=int(steps))
    train = torch.from_numpy(load_digits("train")[0])
    test = torch.from_numpy(load_digits("test")[0])
    config = {**setup.config, "seed": int(seed)}
    with single_threaded():
        torch.manual_seed(seed)
        model = zoo.build(setup.architecture, config)
        model.train()
        _fit(model, train, DIGITS_DOMAIN, setup, seed, progress)
        model.eval()
        provenance = {
            "recipe": recipe,
            "seed": int(seed),
            "steps": setup.steps,
            "batch_size": setup.batch_size,
            "lr": setup.lr,
            "optimizer": "adam",
            "train_nll_bits_per_dim": _evaluate(model, train, DIGITS_DOMAIN, seed + 2),
            "test_nll_bits_per_dim": _evaluate(model, test, DIGITS_DOMAIN, seed + 3),
            "torch": str(torch.__version__),  # no wall time: the file must hash the same on a rebuild
        }
    return TrainedModel(model, setup.architecture, config, DIGITS_DOMAIN, provenance)


DIGITS_CONFIG: dict[str, Any] = {
    "shape": [1, 8, 8],
    "steps": 8,
    "hidden": 64,
    "coupling": "affine",
    "scale": "sigmoid",
    "permutation": "conv1x1",
    "actnorm": True,
}
DIGITS_STEPS, DIGITS_BATCH, DIGITS_LR = 2000, 128, 2e-3


def _digits_recipe(name: str, description: str, **overrides: Any) -> Recipe:
    setup = MLESetup("coupling-image", {**DIGITS_CONFIG, **overrides}, DIGITS_STEPS, DIGITS_BATCH, DIGITS_LR)

    def function(seed: int, progress: Progress | None = None, steps: int | None = None) -> TrainedModel:
        return train_digits(name, setup, seed, progress, steps)

    return Recipe(name, description, function)


DIGITS_RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        _digits_recipe(
            "digits-affine",
            "Glow-style affine coupling flow, scale exp(h), on the "
            "8x8 digits; its inverse explodes on uniform noise (exploding inverse demo)",
            coupling="affine",
            scale="exp",
        ),
        _digits_recipe(
            "digits-affine-sigmoid",
            "the affine flow with Glow's sigmoid(h+2) scale; "
            "within this budget it breaks on rademacher noise, rarely on uniform noise",
            coupling="affine",
            scale="sigmoid",
        ),
        _digits_recipe(
            "digits-affine-deep",
            "the digits-affine flow with 20 steps instead of 8: "
            "it round-trips every test digit, yet a gradient search finds non-finite "
            "points within half a bin of some (the paper's attack finding)",
            coupling="affine",
            scale="exp",
            steps=20,
        ),
        _digits_recipe(
            "digits-additive",
            "the same flow with additive coupling (globally bi-Lipschitz); its inverse stays accurate on noise",
            coupling="additive",
        ),
    )
}

RECIPES: dict[str, Recipe] = {**DIGITS_RECIPES, **PAPER_RECIPES, **GLOW_RECIPES, **TARFLOW_RECIPES}
"""Every recipe: the digits flows above, the paper reproductions (2-D toys, residual flows,
regularized models, INN classifiers) of :mod:`innaudit.train.paper_recipes`, the multi-scale
image Glow of :mod:`innaudit.train.glow_recipe` and the TarFlows of
:mod:`innaudit.train.tarflow_recipe`."""


def run_recipe(name: str, seed: int = 0, progress: Progress | None = None, steps: int | None = None) -> TrainedModel:
    """Train recipe ``name`` with ``seed``; ``progress(step, total)`` is called every step.

    Args:
        name: a key of :data:`RECIPES`.
        seed: seeds the initialization, data order and dequantization noise.
        progress: optional callback, e.g. to draw a progress bar.
        steps: optional override of the number of training steps (for quick tests).
    """
    if name not in RECIPES:
        raise UsageError(f"training recipe {name!r} is unknown; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name].function(seed, progress, steps)
