"""``innaudit repair``: from a failing audit to a fixed checkpoint, with the proof and the price.

The audit says where a checkpoint is not invertible; repair acts on it. One repair:

1. audits the model (or reads a saved report of it),
2. chooses remedies by explicit rules that read the report's metrics and statuses
   (:mod:`innaudit.repair.rules`; never the diagnosis prose),
3. applies them (one module each: :mod:`~innaudit.repair.bounded_scale`,
   :mod:`~innaudit.repair.fd`, :mod:`~innaudit.repair.nf`, :mod:`~innaudit.repair.precision`),
4. fine-tunes briefly on the training data with the model's own objective
   (:mod:`innaudit.repair.finetune`), under :mod:`innaudit.monitor`,
5. re-audits with the same seed, sets and audits, and compares the two runs with the baseline
   machinery (:mod:`innaudit.verdict.baseline`): the re-audit decides whether a remedy fixed the
   failure, never the rule that chose it,
6. measures the price on a held-out split the fine-tune never saw (:mod:`innaudit.repair.price`)
   and writes the repaired checkpoint (:mod:`innaudit.repair.checkpoint`).

``innaudit.repair(model, data=...)`` runs it from Python: the attribute ``innaudit.repair`` is
the plain function :func:`innaudit.repair.session.repair`, and this package is reached by
from-imports (``from innaudit.repair import bound_scales``, ``from innaudit.repair.rules import
...``), which read ``sys.modules``; ``import innaudit.repair.rules as rules`` walks attributes and
so finds the function instead. ``innaudit repair MODEL --data TRAIN -o fixed.pt`` runs it from
the command line.
Remedies are those of Behrmann et al., "Understanding and Mitigating
Exploding Inverses in Invertible Neural Networks", AISTATS 2021, https://arxiv.org/abs/2006.09347.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["RepairResult", "bound_scales", "repair"]

_LAZY = {
    "RepairResult": "innaudit.repair.result",
    "bound_scales": "innaudit.repair.bounded_scale",
    "repair": "innaudit.repair.session",
}

if TYPE_CHECKING:
    from innaudit.repair.bounded_scale import bound_scales
    from innaudit.repair.result import RepairResult
    from innaudit.repair.session import repair


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'innaudit.repair' has no attribute {name!r}")
