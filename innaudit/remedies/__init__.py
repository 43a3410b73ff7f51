"""``innaudit repair``: from a failing audit to a fixed checkpoint, with the proof and the price.

The audit says where a checkpoint is not invertible; repair acts on it. One repair:

1. audits the model (or reads a saved report of it),
2. chooses remedies by explicit rules that read the report's metrics and statuses
   (:mod:`innaudit.remedies.rules`; never the diagnosis prose),
3. applies them (one module each: :mod:`~innaudit.remedies.bounded_scale`,
   :mod:`~innaudit.remedies.fd`, :mod:`~innaudit.remedies.nf`, :mod:`~innaudit.remedies.precision`),
4. fine-tunes briefly on the training data with the model's own objective
   (:mod:`innaudit.remedies.finetune`), under :mod:`innaudit.monitor`,
5. re-audits with the same seed, sets and audits, and compares the two runs with the baseline
   machinery (:mod:`innaudit.verdict.baseline`): the re-audit decides whether a remedy fixed the
   failure, never the rule that chose it,
6. measures the price on a held-out split the fine-tune never saw (:mod:`innaudit.remedies.price`)
   and writes the repaired checkpoint (:mod:`innaudit.remedies.checkpoint`).

``innaudit.repair(model, data=...)`` (the function :func:`innaudit.remedies.session.repair`)
runs it from Python, ``innaudit repair MODEL --data TRAIN -o fixed.pt`` from the command line.
The package is named for its remedies, not ``repair``, so that the name ``innaudit.repair`` is
the function alone, in any import order and any import form.
Remedies are those of Behrmann et al., "Understanding and Mitigating
Exploding Inverses in Invertible Neural Networks", AISTATS 2021, https://arxiv.org/abs/2006.09347.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from innaudit.core.lazy import lazy_getattr

__all__ = ["RepairResult", "bound_scales", "repair"]

_LAZY = {
    "RepairResult": "innaudit.remedies.result",
    "bound_scales": "innaudit.remedies.bounded_scale",
    "repair": "innaudit.remedies.session",
}

if TYPE_CHECKING:
    from innaudit.remedies.bounded_scale import bound_scales
    from innaudit.remedies.result import RepairResult
    from innaudit.remedies.session import repair


__getattr__ = lazy_getattr(globals(), _LAZY, __name__)
