"""The model's own objective, which a repair fine-tunes with: NLL for flows, cross-entropy for
supervised INNs.

- ``nll``: ``-log p(x)``. A module with ``log_prob(x)`` (normflows, nflows) gives it with its own
  base distribution; otherwise ``0.5 ||F(x)||^2 + D/2 log(2 pi) - log|det J_F(x)|`` under a
  standard-normal prior, with the log-det the model reports (exact or estimated).
- ``ce``: a supervised INN (a ``head`` module on the flat latent, or a ``classify(x)`` method
  giving logits): the cross-entropy of its logits, which needs the labels of the training data.

A model with neither a log-det nor a classifier has no objective innaudit knows; the remedies
that fine-tune then do not apply (the plan says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innaudit.model.contract import InvertibleModel, LogDetKind
from innaudit.train.regularizers import gaussian_nll

__all__ = ["CE", "NLL", "Objective", "Step", "logits", "objective_of", "per_sample_nll", "task_loss", "validation_loss"]

NLL, CE = "nll", "ce"


@dataclass(frozen=True)
class Objective:
    """The objective a fine-tune uses (``kind`` None: none is known, ``note`` says why)."""

    kind: str | None
    note: str

    @property
    def supervised(self) -> bool:
        """Whether it needs labels (a classifier)."""
        return self.kind == CE


@dataclass(frozen=True)
class Step:
    """One batch's task loss with the latent and log-det it computed (None when not computed)."""

    loss: Tensor
    z: Tensor | None
    log_det: Tensor | None


def _is_classifier(module: nn.Module) -> bool:
    return isinstance(getattr(module, "head", None), nn.Module) or callable(getattr(module, "classify", None))


def objective_of(model: InvertibleModel) -> Objective:
    """What ``model`` was trained for, read from the model itself."""
    if _is_classifier(model.module):
        return Objective(CE, "supervised INN: cross-entropy of its classifier")
    if model.info.log_det_kind is not LogDetKind.NONE:
        prior = "its log_prob" if callable(getattr(model.module, "log_prob", None)) else "a standard-normal prior"
        return Objective(NLL, f"negative log-likelihood under {prior}")
    return Objective(
        None,
        "the model reports no log-det and has no classifier (head or classify), so innaudit does not know "
        "its training objective",
    )


def logits(model: InvertibleModel, x: Tensor, z: Tensor) -> Tensor:
    """A classifier's logits: ``head(flat z)`` when it has a head, else ``classify(x)``."""
    head = getattr(model.module, "head", None)
    if isinstance(head, nn.Module):
        return cast(Tensor, head(z.flatten(1)))
    return cast(Tensor, model.module.classify(x))  # type: ignore[operator]


def task_loss(model: InvertibleModel, objective: Objective, x: Tensor, y: Tensor | None) -> Step:
    """The objective on one batch, with autograd (the module stays in eval mode)."""
    if objective.kind == CE:
        z, log_det = model.forward_and_log_det(x, grad=True)
        return Step(F.cross_entropy(logits(model, x, z), cast(Tensor, y)), z, log_det)
    log_prob = getattr(model.module, "log_prob", None)
    if callable(log_prob):
        return Step(-cast(Tensor, log_prob(x)).mean(), None, None)
    z, log_det = model.forward_and_log_det(x, grad=True)
    return Step(gaussian_nll(z, cast(Tensor, log_det)).mean(), z, log_det)


def per_sample_nll(model: InvertibleModel, x: Tensor) -> Tensor:
    """``-log p(x)`` per sample in nats (no autograd)."""
    log_prob = getattr(model.module, "log_prob", None)
    if callable(log_prob):
        was = model.module.training
        model.module.eval()
        try:
            with torch.no_grad():
                return -cast(Tensor, log_prob(x))
        finally:
            model.module.train(was)
    z, log_det = model.forward_and_log_det(x)
    return gaussian_nll(z, cast(Tensor, log_det))


@torch.no_grad()
def validation_loss(model: InvertibleModel, objective: Objective, x: Tensor, y: Tensor | None) -> float:
    """The objective's mean on a validation batch (``x`` already dequantized), no autograd."""
    if objective.kind == CE:
        z = model.forward(x)
        return float(F.cross_entropy(logits(model, x, z), cast(Tensor, y)))
    return float(per_sample_nll(model, x).mean())
