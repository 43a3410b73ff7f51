"""Factory models for the ``torchrun`` tests, loadable as ``tests/distributed_models.py:NAME``.

Both are the exact linear flow of :mod:`tests.fixtures_models` on every rank but rank 1 (the
``RANK`` variable ``torchrun`` sets); on rank 1 the inverse of a batch of more than one sample
(the audits' batches; the shape probe runs the forward pass on one sample):

- ``raising``: raises ``RuntimeError("boom on purpose")``;
- ``hanging``: sleeps ``HANG_S`` seconds first, far longer than the tests' ``--rank-timeout``.
"""

from __future__ import annotations

import os
import time

from torch import Tensor, nn

from tests.fixtures_models import ExactLinear

__all__ = ["HANG_S", "hanging", "raising"]

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
