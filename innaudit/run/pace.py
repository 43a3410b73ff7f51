"""An audit's pace under a budget: the callable the audits call after each batch.

:class:`Pace` is given to an audit as :attr:`innaudit.audits.base.AuditContext.pace` by the
runner's plan (:class:`innaudit.run.plan.PlanRun`), with the audit's deadline. The audit's
batch loop (:meth:`~innaudit.audits.base.AuditContext.map`) calls ``pace(done, total)`` with
the batches done; past the deadline it answers False, once and for all, and keeps where that
happened, so the runner records the cut (never a silent pass on fewer samples). Work that a
batch cannot split (Lanczos iterations, attack steps) asks :meth:`Pace.overdue` instead
(:attr:`~innaudit.audits.base.AuditContext.overdue`): past the deadline it stops where it is,
and the pace counts how often that happened. Work that sizes its own sub-batches to the time
left reads :meth:`Pace.left` (:attr:`~innaudit.audits.base.AuditContext.left`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Pace"]


class Pace:
    """``pace(done, total) -> bool``: True while the clock is before ``deadline``."""

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline = deadline
        self.clock = clock
        self.cut: tuple[int, int] | None = None
        """``(done, total)`` batches when the deadline was first passed; None while on time."""
        self.stops = 0
        """How many times work inside a batch was told to stop (:meth:`overdue` answered True)."""

    def __call__(self, done: int, total: int) -> bool:
        if self.cut is not None:
            return False
        if done >= total or self.clock() <= self.deadline:
            return True
        self.cut = (done, total)
        return False

    def overdue(self) -> bool:
        """True once the clock is past ``deadline`` (each True is counted in :attr:`stops`)."""
        if self.clock() <= self.deadline:
            return False
        self.stops += 1
        return True

    def left(self) -> float:
        """Seconds until ``deadline`` (negative once past it)."""
        return self.deadline - self.clock()

    def where(self) -> str | None:
        """Where the deadline cut the work (``"3 of 20 batches"``, ``"2 loop(s) inside a batch"``,
        or both), None when it did not."""
        parts = [f"{self.cut[0]} of {self.cut[1]} batches"] if self.cut is not None else []
        if self.stops:
            parts.append(
                f"{self.stops} loop(s) inside a batch (Lanczos iterations, attack steps, sub-batches, "
                "sets begun late cut to one sample)"
            )
        return ", and ".join(parts) or None
