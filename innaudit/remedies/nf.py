"""Remedy *NF objective*: the normalizing-flow likelihood as a small-weight regularizer of a
supervised INN's fine-tune.

``coeff * mean NLL(x)`` with ``coeff = 1e-5`` (the paper's ``--nf_coeff`` for its CIFAR-10
classifiers), added on the same steps as FD. Its ``-log|det J_F|`` term is ``-sum log sigma_i``,
unbounded as any singular value goes to 0, so it keeps a classifier trained by cross-entropy
alone from collapsing a direction (Behrmann et al., AISTATS 2021,
https://arxiv.org/abs/2006.09347, Section 6; :func:`innaudit.train.regularizers.nf_regularizer`).
A density model's objective already is this one, so the remedy is only for supervised INNs.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from innaudit.remedies.objective import CE, Objective
from innaudit.train.regularizers import NF_COEFF, nf_regularizer

__all__ = ["CHANGES", "NFSettings", "applicable", "nf_term"]

CHANGES = "adds {coeff:g} x the NLL (the NF objective) to the cross-entropy on the FD steps"


@dataclass(frozen=True)
class NFSettings:
    """The paper's weight of the NLL term."""

    coeff: float = NF_COEFF


def applicable(objective: Objective) -> str | None:
    """None for a supervised INN, else why not."""
    if objective.kind == CE:
        return None
    if objective.kind is None:
        return objective.note
    return "a density model's objective already is the NF objective"


def nf_term(z: Tensor, log_det: Tensor, settings: NFSettings) -> Tensor:
    """``coeff * mean NLL`` under a standard-normal prior."""
    return nf_regularizer(z, log_det, settings.coeff)
