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

``innaudit.repair(model, data=...)`` runs it from Python (:func:`innaudit.repair.session.repair`);
``innaudit repair MODEL --data TRAIN -o fixed.pt`` from the command line. The package itself is
callable (``innaudit.repair`` and ``innaudit.repair.repair`` are this package, and calling it
calls :func:`~innaudit.repair.session.repair`), so ``innaudit.repair(...)`` and ``import
innaudit.repair.bounded_scale`` both work in any order. Remedies are those of Behrmann et al., "Understanding and Mitigating
Exploding Inverses in Invertible Neural Networks", AISTATS 2021, https://arxiv.org/abs/2006.09347.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["RepairResult", "bound_scales", "repair"]

_LAZY = {
    "RepairResult": "innaudit.repair.result",
    "bound_scales": "innaudit.repair.bounded_scale",
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


class _CallablePackage(types.ModuleType):
    """This package, callable as :func:`innaudit.repair.session.repair`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from innaudit.repair.session import repair as run

        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
if not TYPE_CHECKING:
    # ``innaudit.repair`` is this package whichever way it was reached (``import
    # innaudit.repair.bounded_scale`` must keep working), and calling it runs a repair
    repair = sys.modules[__name__]
