"""Remedy *FD fine-tune*: the paper's bi-directional finite-difference regularizer, added to the
model's own objective for a short fine-tune.

``R = c ||F(x) - F(x + eps d)||^2 / eps + c' ||x - F^-1(F(x) + eps d')||^2 / eps`` with ``eps =
0.1``, ``c = c' = 1e-4``, added on every 10th step (Behrmann et al., AISTATS 2021,
https://arxiv.org/abs/2006.09347, Section 6; :func:`innaudit.train.regularizers.fd_regularizer`).
To first order it is ``c eps (||J_F(x) d||^2 + ||J_F^-1(z) d'||^2)``: it pushes the smallest
singular value of ``J_F`` up and the largest down, around the data. It is the remedy for local
failures (a hole in the dequantization cell, a wrong memory-saving gradient, an ill-conditioned
Jacobian on the data); it does nothing far from the data, where a bounded scale acts.

Both terms are differentiated by autograd through ``F`` and ``F^-1`` (the paper's code only
reaches the parameters through its memory-saving backward pass), so it works for any model with
a differentiable inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from innaudit.model.contract import InvertibleModel
from innaudit.remedies.objective import Objective
from innaudit.train.regularizers import FD_COEFF, FD_EPS, fd_regularizer

__all__ = ["CHANGES", "FDSettings", "applicable", "fd_term"]

CHANGES = (
    "fine-tunes every weight on the training data with the model's objective plus the FD term "
    "(eps {eps:g}, {coeff:g} on F and F^-1) every {every} steps"
)


@dataclass(frozen=True)
class FDSettings:
    """The paper's settings: step ``eps``, coefficients on F and F^-1."""

    eps: float = FD_EPS
    coeff: float = FD_COEFF
    inverse_coeff: float = FD_COEFF


def applicable(objective: Objective) -> str | None:
    """None when FD can fine-tune this model, else why not."""
    return None if objective.kind is not None else objective.note


def fd_term(
    model: InvertibleModel, x: Tensor, z: Tensor | None, settings: FDSettings, generator: torch.Generator
) -> Tensor:
    """The FD regularizer on batch ``x`` (``z = F(x)`` when already computed with autograd)."""
    return fd_regularizer(
        lambda t: model.forward(t, grad=True),
        lambda t: model.inverse(t, grad=True),
        x,
        eps=settings.eps,
        coeff=settings.coeff,
        inverse_coeff=settings.inverse_coeff,
        generator=generator,
        z=z,
    )
