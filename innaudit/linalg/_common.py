"""What the exact and the matrix-free routines share: the map type, the thread policy and the
reorthogonalization of a Krylov basis."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["REPEAT", "SMALL_DIM", "Map", "Stop", "orthogonalize", "running", "threads_for"]

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


REPEAT = 0.5**0.5
"""A row is orthogonalized a second time when one pass left at most this fraction of its norm
(the criterion of Daniel, Gragg, Kaufman and Stewart, "Reorthogonalization and stable algorithms
for updating the Gram-Schmidt QR factorization", Math. Comp. 30(136), 1976,
https://doi.org/10.1090/S0025-5718-1976-0431641-8): where less cancelled, one pass in float64
already leaves the row orthogonal to the basis to about float64's rounding."""


def _project_out(w: Tensor, basis: Tensor) -> Tensor:
    """``w - basis^T (basis w)`` per row, ``basis`` ``(N, j, d)`` (one classical Gram-Schmidt pass)."""
    coef = torch.bmm(basis, w.unsqueeze(2))
    return w - torch.bmm(coef.transpose(1, 2), basis).squeeze(1)


def orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """``w`` less its components along the orthonormal rows of ``basis`` ``(N, j, d)``: one pass,
    and a second for the rows whose norm the first cut below :data:`REPEAT` of it."""
    once = _project_out(w, basis)
    again = torch.nonzero(once.norm(dim=1) <= REPEAT * w.norm(dim=1)).flatten()
    if len(again) == len(w):
        return _project_out(once, basis)
    if len(again):
        once[again] = _project_out(once[again], basis[again])
    return once


def running(done: Tensor) -> tuple[Tensor, Tensor | slice]:
    """The rows of a Krylov loop not yet ``done``: their indices, and how to index the loop's
    buffers with them (a slice while every row runs, so the bases are read as views, not copied
    at every step)."""
    rows = torch.nonzero(~done).flatten()
    return rows, (slice(None) if len(rows) == len(done) else rows)
