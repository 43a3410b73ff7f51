"""What the exact and the matrix-free routines share: the map type and the thread policy."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["SMALL_DIM", "Map", "Stop", "threads_for"]

Map = Callable[[Tensor], Tensor]

Stop = Callable[[], bool]
"""``stop() -> bool``, asked before each step of an iteration (Lanczos, Golub-Kahan) after the
first: True ends the run there (a budget's deadline passed); the rows not yet done keep what the
steps they reached give and are flagged ``stopped``."""

SMALL_DIM = 1024
"""At or below this dimension the matrix-free routines run single-threaded: one JVP or VJP of a
few samples is a tiny operation, and intra-op threads cost more in synchronization than they
save. The exact Jacobian keeps every thread: its vmapped batch is ``dim`` rows per sample,
large enough for intra-op parallelism to pay."""


@contextlib.contextmanager
def threads_for(dim: int) -> Iterator[None]:
    """One intra-op thread for small problems, restored afterwards."""
    before = torch.get_num_threads()
    if dim <= SMALL_DIM and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
