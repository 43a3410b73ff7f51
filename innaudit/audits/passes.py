"""Model passes several audits share in one run: ``F(x)``, ``F^-1(F(x))`` and ``log|det J_F(x)|``
of the same batch of the same set, computed once and looked up after.

``roundtrip`` round-trips every sample of the data sets; ``precision`` (its lane in the model's
own dtype), ``layers`` (the whole model's round trip that ranks the samples) and ``logdet`` (the
model's log-det) start from the same passes of the same sets' first samples. A run keeps one
:class:`SharedPasses`; an audit asks it for a :meth:`~SharedPasses.view` of the model on one batch
(set, start, stop) and calls the view as it would call the model. The first call of a pass on a
batch runs the model and keeps the result when the batch lies within the rows a later audit
reads; a later call on the same batch of a bitwise-equal input returns the kept tensor.

What makes a kept pass the same as a new one: the key is the model object, the set, the batch's
``(start, stop)`` and the pass, and the input must be equal element for element (``torch.equal``,
checked on every lookup), so a lookup gives the tensor the model would have given (a
deterministic model; the report is the same with and without reuse). The audits that read cut
their batches at the same rows (:attr:`SharedPasses.cuts`, whether or not anything is kept), so
their batches are the ones ``roundtrip`` ran. An iterative inverse's passes are never kept (its
capped solves are counted as they run).

Bound: at most ``limit_bytes`` (:data:`LIMIT_BYTES`, 256 MiB; the environment variable
``INNAUDIT_SHARED_PASSES_MIB`` sets it, 0 turns reuse off) of inputs and outputs are kept; a
batch past it is not kept and its readers run the model again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from innaudit.model.contract import InverseKind, InvertibleModel, LogDetShapeError

__all__ = ["LIMIT_BYTES", "READERS", "PassView", "SharedPasses", "limit_from_environment", "reader_rows"]

LIMIT_BYTES = 256 * 2**20
"""Default bound on the bytes of kept passes (inputs, latents, reconstructions, log-dets)."""

READERS = ("precision", "layers", "logdet")
"""The audits that read passes ``roundtrip`` ran: each takes the first ``samples`` of every data
set (its ``samples`` option, capped by ``--samples``)."""

_LOG_DET_READER = "logdet"


def limit_from_environment(default: int = LIMIT_BYTES) -> int:
    """The bound in bytes: ``INNAUDIT_SHARED_PASSES_MIB`` (MiB, 0 turns reuse off) or ``default``."""
    text = os.environ.get("INNAUDIT_SHARED_PASSES_MIB", "").strip()
    if not text:
        return default
    try:
        mib = float(text)
    except ValueError:
        return default
    return max(0, int(mib * 2**20))


def reader_rows(options: Mapping[str, Mapping[str, Any]], samples: int) -> dict[str, int]:
    """Rows of each data set every selected reader takes: ``{audit id: min(samples option,
    --samples)}`` for the :data:`READERS` in ``options`` (selected audits' effective options)."""
    return {aid: max(0, min(int(options[aid].get("samples", samples)), samples)) for aid in READERS if aid in options}


@dataclass
class _Entry:
    """One batch's kept passes: its input and what the model gave on it."""

    model: InvertibleModel
    x: Tensor
    z: Tensor
    back: Tensor | None = None
    log_det: Tensor | None = None
    has_log_det: bool = False


@dataclass
class SharedPasses:
    """The passes of one run, kept per (model, set, batch) within a memory bound.

    Attributes:
        rows: per reader audit, the rows of each data set it reads (:func:`reader_rows`).
        limit_bytes: the most bytes kept; 0 keeps nothing (every pass runs the model).
        hits: lookups answered from kept passes (for benchmarks; never in a report).
    """

    rows: Mapping[str, int] = field(default_factory=dict)
    limit_bytes: int = LIMIT_BYTES
    hits: int = 0
    _entries: dict[tuple[int, str, int, int], _Entry] = field(default_factory=dict, repr=False)
    _bytes: int = field(default=0, repr=False)

    @property
    def cuts(self) -> tuple[int, ...]:
        """Rows where the audits that share passes end a batch (every reader's row count): the
        same whether or not anything is kept, so batches, and so results, do not depend on reuse."""
        return tuple(sorted({r for r in self.rows.values() if r > 0}))

    @property
    def kept_bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def view(self, model: InvertibleModel, name: str, start: int, stop: int) -> PassView:
        """``model`` on the batch ``start:stop`` of the set ``name``, its passes shared."""
        return PassView(self, model, name, start, stop)

    def _keeps(self, stop: int) -> bool:
        return self.limit_bytes > 0 and stop <= max(self.rows.values(), default=0)

    def _log_det_wanted(self, stop: int) -> bool:
        return stop <= self.rows.get(_LOG_DET_READER, 0)

    def _add(self, key: tuple[int, str, int, int], entry: _Entry, more: Iterable[Tensor | None]) -> bool:
        size = sum(t.numel() * t.element_size() for t in more if t is not None)
        if self._bytes + size > self.limit_bytes:
            return False
        self._bytes += size
        self._entries[key] = entry
        return True

    def _grow(self, entry: _Entry, t: Tensor | None) -> bool:
        size = 0 if t is None else t.numel() * t.element_size()
        if self._bytes + size > self.limit_bytes:
            return False
        self._bytes += size
        return True


class PassView:
    """A model's passes on one batch, looked up in a run's :class:`SharedPasses` first.

    ``forward``, ``forward_and_log_det`` and ``inverse`` take and give what the model's methods
    do (without autograd: a view is for passes that need no gradient); everything else (``info``,
    ``blocks()``, ``dtype``...) is the model's own, so a view stands where the model does.
    """

    def __init__(self, passes: SharedPasses, model: InvertibleModel, name: str, start: int, stop: int) -> None:
        self.passes, self.model = passes, model
        self.key = (id(model), name, start, stop)
        self.stop = stop

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "passes", "key", "stop"):  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.model, name)

    def _entry(self, x: Tensor) -> _Entry | None:
        found = self.passes._entries.get(self.key)
        if found is None or found.model is not self.model:
            return None
        return found if _equal(found.x, x) else None

    def forward(self, x: Tensor) -> Tensor:
        """``F(x)``: kept, or computed (with its log-det when ``logdet`` will read this batch)."""
        found = self._entry(x)
        if found is not None:
            self.passes.hits += 1
            return found.z
        if self.passes._keeps(self.stop) and self.passes._log_det_wanted(self.stop):
            z, ld, has = self._forward_and_log_det(x)
            self._keep(x, z, ld, has)
            return z
        z = self.model.forward(x)
        self._keep(x, z, None, False)
        return z

    def forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(F(x), log|det J_F(x)|)`` as the model gives them (its errors raised as it raises them)."""
        found = self._entry(x)
        if found is not None and found.has_log_det:
            self.passes.hits += 1
            return found.z, found.log_det
        z, ld = self.model.forward_and_log_det(x)
        if found is None:
            self._keep(x, z, ld, True)
        elif self.passes._grow(found, ld):
            found.log_det, found.has_log_det = ld, True
        return z, ld

    def inverse(self, z: Tensor) -> Tensor:
        """``F^-1(z)``: kept when ``z`` is this batch's kept latent, else computed."""
        found = self.passes._entries.get(self.key)
        same = found is not None and found.model is self.model and (found.z is z or _equal(found.z, z))
        if found is not None and same and found.back is not None:
            self.passes.hits += 1
            return found.back
        back = self.model.inverse(z)
        iterative = self.model.info.inverse_kind is InverseKind.ITERATIVE
        if found is not None and same and not iterative and self.passes._grow(found, back):
            found.back = back
        return back

    def _forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor | None, bool]:
        """The forward pass with the log-det; a model whose log-det is malformed gives only ``z``
        here (``logdet`` reports it when it runs the model itself)."""
        try:
            z, ld = self.model.forward_and_log_det(x)
        except LogDetShapeError:
            return self.model.forward(x), None, False
        return z, ld, True

    def _keep(self, x: Tensor, z: Tensor, ld: Tensor | None, has: bool) -> None:
        if not self.passes._keeps(self.stop) or self.key in self.passes._entries:
            return
        self.passes._add(self.key, _Entry(self.model, x, z, None, ld, has), (x, z, ld))


def _equal(a: Tensor, b: Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    return torch.equal(a, b) or _both_nan_equal(a, b)


def _both_nan_equal(a: Tensor, b: Tensor) -> bool:
    """Equal where finite or infinite, NaN at the same places (a NaN is never ``==`` itself)."""
    nan = a.isnan()
    return bool(nan.equal(b.isnan()) and a[~nan].equal(b[~nan]))
