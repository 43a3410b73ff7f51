"""The price of a repair: what it cost the model at its own task, on data the fine-tune never saw.

- Flows: the NLL in bits per dimension of the held-out split,
  ``(-log p(x) / D + log(1 / bin_width)) / log 2`` for data dequantized with one fixed draw of
  ``U(0, bin_width)`` noise (the same draw before and after, so the difference is the model's).
- Supervised INNs: the accuracy of the classifier on the held-out split.

It is measured three times: the original model, after the structural remedies (before any
fine-tune: what the clamp alone changed), and the repaired model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from innaudit.core.seeding import stable_seed
from innaudit.model.contract import InvertibleModel
from innaudit.remedies.finetune import dequantize
from innaudit.remedies.objective import CE, Objective, logits, per_sample_nll
from innaudit.train.common import bits_per_dim

__all__ = ["ACCURACY", "NLL_BPD", "Price", "measure"]

NLL_BPD, ACCURACY = "nll_bits_per_dim", "accuracy"


@dataclass(frozen=True)
class Price:
    """The task figure before and after (``after_remedies``: before the fine-tune)."""

    metric: str
    before: float
    after_remedies: float | None
    after: float | None
    heldout: str
    n: int

    @property
    def change(self) -> float | None:
        """``after - before`` (negative NLL change and positive accuracy change are gains)."""
        return None if self.after is None else self.after - self.before

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {
            "metric": self.metric,
            "before": self.before,
            "after_remedies": self.after_remedies,
            "after": self.after,
            "change": self.change,
            "heldout": self.heldout,
            "n": self.n,
        }


@torch.no_grad()
def measure(
    model: InvertibleModel, objective: Objective, x: Tensor, y: Tensor | None, seed: int, batch_size: int = 500
) -> tuple[str, float]:
    """``(metric, value)`` of ``model`` on the held-out ``x`` (labels ``y`` for a classifier)."""
    if objective.kind == CE:
        if y is None:
            return ACCURACY, math.nan
        right = 0
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(model.dtype)
            z = model.forward(batch)
            right += int((logits(model, batch, z).argmax(1) == y[start : start + batch_size]).sum())
        return ACCURACY, right / max(len(x), 1)
    generator = torch.Generator().manual_seed(stable_seed(seed, "repair", "price"))
    nll = [
        per_sample_nll(model, dequantize(x[start : start + batch_size], model.info.domain, generator).to(model.dtype))
        for start in range(0, len(x), batch_size)
    ]
    return NLL_BPD, bits_per_dim(torch.cat(nll), model.info.domain)
