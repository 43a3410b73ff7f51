"""Supervised INN classifiers: ``coupling-classifier`` (the paper's INN classifier in miniature).

A coupling flow ``F`` (as :class:`~innaudit.zoo.coupling.CouplingImage`) followed by a linear
head on all latent dimensions, ``logits = W vec(F(x)) + b`` (the paper's head is
BatchNorm -> ReLU -> Linear on the 3072 latents of a CIFAR-10 Glow; here a plain linear head on
the 64 latents of the 8x8 digits). The module keeps the zoo contract (``forward(x) -> (z,
log_det)``, ``inverse``, ``blocks``) so every audit sees the flow; :meth:`classify` gives the
logits. Nothing in the cross-entropy objective asks ``F`` to stay invertible, which is how
the paper's unregularized affine classifier became numerically non-invertible (Behrmann et al.,
AISTATS 2021, section 5 and Table C); the FD and NF regularizers of
:mod:`innaudit.train.regularizers` counter it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from innaudit.zoo import register
from innaudit.zoo.coupling import CouplingImage

__all__ = ["CouplingClassifier"]


@register("coupling-classifier")
class CouplingClassifier(CouplingImage):
    """:class:`CouplingImage` plus ``head = Linear(prod(latent shape), classes)``.

    Args:
        classes: number of classes of the head; the other arguments as for CouplingImage.
    """

    def __init__(
        self,
        shape: Sequence[int] = (1, 8, 8),
        steps: int = 8,
        hidden: int = 64,
        coupling: str = "affine",
        scale: str = "sigmoid",
        permutation: str = "conv1x1",
        actnorm: bool = True,
        classes: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(shape, steps, hidden, coupling, scale, permutation, actnorm, seed)
        generator = torch.Generator().manual_seed(int(seed) + 7919)
        features = math.prod(int(s) for s in shape)
        self.head = nn.Linear(features, int(classes))
        bound = 1.0 / math.sqrt(features)
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound, generator=generator)
            self.head.bias.zero_()

    def classify(self, x: Tensor) -> Tensor:
        """Class logits ``head(flatten(F(x)))``."""
        z, _ = self(x)
        return self.head(z.flatten(1))
