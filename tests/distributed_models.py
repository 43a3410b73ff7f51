"""Factory models for the ``torchrun`` tests, loadable as ``tests/distributed_models.py:NAME``.

Both are the exact linear flow of :mod:`tests.fixtures_models` on every rank but rank 1 (the
``RANK`` variable ``torchrun`` sets); on rank 1 the inverse of a batch of more than one sample
(the audits' batches; the shape probe runs the forward pass on one sample):

- ``raising``: raises ``RuntimeError("boom on purpose")``;
- ``hanging``: sleeps ``HANG_S`` seconds first, far longer than the tests' ``--rank-timeout``.

``counting`` is a chain of two exact 2-D linear blocks (so every sharded audit applies: ``grid``
needs 2-D inputs, ``layers`` and ``gradient`` blocks, ``bounds`` the blocks' ``lipschitz_bounds``)
that counts, per audit, the samples its blocks are called on (a call under ``vmap`` counts once;
under torchrun each call also sleeps 1 ms, so that no rank can claim every unit before the other
starts); after each call it writes ``{audit id: samples}`` as JSON to ``$INNAUDIT_COUNTS/<RANK>.json`` (``single``
without ``RANK``): how a torchrun job shared the work out.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor, nn

from innaudit.zoo.flow import SequentialFlow
from tests.fixtures_models import ExactLinear

__all__ = ["HANG_S", "counting", "hanging", "raising"]

HANG_S = 120.0


def _rank_one() -> bool:
    return os.environ.get("RANK") == "1"


class _Raising(ExactLinear):
    def inverse(self, z: Tensor) -> Tensor:
        """``W^-1 z``; raises on rank 1 for a batch."""
        if _rank_one() and len(z) > 1:
            raise RuntimeError("boom on purpose")
        return super().inverse(z)


class _Hanging(ExactLinear):
    def inverse(self, z: Tensor) -> Tensor:
        """``W^-1 z``; on rank 1 a batch first sleeps ``HANG_S`` seconds."""
        if _rank_one() and len(z) > 1:
            time.sleep(HANG_S)
        return super().inverse(z)


def raising() -> nn.Module:
    """Factory: exact, but the inverse raises on rank 1."""
    return _Raising()


def hanging() -> nn.Module:
    """Factory: exact, but the inverse hangs on rank 1."""
    return _Hanging()


_COUNTS: Counter[str] = Counter()


def _audit_calling() -> str:
    """The id of the audit whose ``run`` is on the stack (its module in ``innaudit/audits/``,
    the outermost one), or ``""`` (loading, planning)."""
    found, frame = "", sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.parent.name == "audits" and path.parent.parent.name == "innaudit":
            found = path.stem
        frame = frame.f_back
    return found


def _count(t: Tensor) -> None:
    _COUNTS[_audit_calling()] += t.shape[0] if t.dim() > 1 else 1
    _write_counts()  # on every call: innaudit ends with os._exit, so a model's atexit never runs
    if "RANK" in os.environ:  # under torchrun a unit takes a few ms, so the ranks' claims interleave
        time.sleep(0.001)


def _write_counts() -> None:
    where = os.environ.get("INNAUDIT_COUNTS")
    if where:
        Path(where, f"{os.environ.get('RANK', 'single')}.json").write_text(json.dumps(_COUNTS))


class _CountedLinear(ExactLinear):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x W^T, log|det W|)``, counted."""
        _count(x)
        return super().forward(x)

    def inverse(self, z: Tensor) -> Tensor:
        """``W^-1 z``, counted."""
        _count(z)
        return super().inverse(z)

    def lipschitz_bounds(self) -> tuple[float, float]:
        """``(sigma_max(W), 1 / sigma_min(W))`` with 1 % to spare."""
        sv = torch.linalg.svdvals(self.w.detach().double())
        return 1.01 * float(sv[0]), 1.01 / float(sv[-1])


class _Chain(SequentialFlow):
    data_range = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__([_CountedLinear(2), _CountedLinear(2)])
        self.input_shape = (2,)


def counting() -> nn.Module:
    """Factory: two exact 2-D linear blocks that count each audit's samples (written on each call)."""
    return _Chain()
