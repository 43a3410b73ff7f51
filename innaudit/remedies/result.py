"""What a repair returns: the plan, what each remedy did (as the re-audit judged it), the price,
the before and after reports, and the checkpoint bytes.

:attr:`RepairResult.report` is the after-run's report with its comparison against the before-run
(the ``compare`` machinery) and the repair's own block under ``run.repair``, so every renderer
shows the before/after comparison and the JSON carries the whole repair.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from innaudit.core.results import ExitCode, Report, SetResult, Status
from innaudit.remedies.evidence import Evidence
from innaudit.remedies.plan import Plan
from innaudit.remedies.price import Price

__all__ = ["Outcome", "RemedyResult", "RepairResult", "RepairStatus", "judge", "still_failing"]


class RepairStatus(str, Enum):
    """How a repair ended."""

    REPAIRED = "repaired"  # remedies applied and the re-audit passes
    NOT_FIXED = "not-fixed"  # remedies applied, something still fails
    NO_REMEDY = "no-remedy"  # the rules found nothing that applies: nothing was changed
    NOTHING_TO_REPAIR = "nothing-to-repair"  # the audit passed
    PLANNED = "planned"  # --plan: nothing was changed


class Outcome(str, Enum):
    """What the re-audit says about one remedy's evidence."""

    FIXED = "fixed"  # every set it was chosen on passes its checks now
    PARTLY = "partly fixed"  # some do
    IMPROVED = "improved, not fixed"  # none does, but the metrics it was chosen on got better
    NOT_FIXED = "not fixed"  # none does, and nothing it was chosen on got better


@dataclass(frozen=True)
class RemedyResult:
    """One applied remedy: what it changed, its parameters, and the re-audit's verdict on it."""

    remedy: str
    changes: str
    parameters: Mapping[str, Any]
    outcome: Outcome | None = None
    after: tuple[Evidence, ...] = ()
    """The same metrics as its evidence, in the re-audit."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {
            "remedy": self.remedy,
            "changes": self.changes,
            "parameters": dict(self.parameters),
            "outcome": self.outcome.value if self.outcome is not None else None,
            "after": [e.to_dict() for e in self.after],
        }


def _result(report: Report, audit: str, dataset: str) -> SetResult | None:
    for found in report.audits:
        if found.id == audit:
            return next((r for r in found.results if r.dataset == dataset), None)
    return None


def _holds(report: Report, item: Evidence) -> tuple[bool, Evidence | None]:
    """Whether ``item``'s metric passes its gate in ``report`` now, and its value there."""
    result = _result(report, item.audit, item.dataset)
    if result is None:
        return False, None
    from innaudit.core.results import lookup

    value = lookup(result.metrics, item.metric)
    now = Evidence(item.audit, item.dataset, item.metric, float(value)) if isinstance(value, (int, float)) else None
    failed = any(c.status is Status.FAIL for c in result.checks)
    return result.status is not Status.ERROR and not failed, now


def _better(before: float, after: float | None, metric: str) -> bool:
    """Whether a metric moved in its good direction (``invertible`` is better when higher; a
    number where there was NaN is better)."""
    if after is None or math.isnan(after):
        return False
    if math.isnan(before):
        return True
    return after > before if metric.endswith("invertible") else after < before


def judge(report: Report, evidence: tuple[Evidence, ...]) -> tuple[Outcome, tuple[Evidence, ...]]:
    """The re-audit's verdict on the evidence a remedy was chosen on: an item holds when its
    audit's result on its set fails no check in ``report`` (the failure there is gone, whichever
    of the set's metrics showed it). None holding but some metric better is IMPROVED."""
    held = [_holds(report, e) for e in evidence]
    ok = sum(1 for fine, _ in held if fine)
    now = tuple(n for _, n in held if n is not None)
    if ok == len(held):
        return Outcome.FIXED, now
    if ok:
        return Outcome.PARTLY, now
    better = any(_better(e.value, n.value if n else None, e.metric) for e, (_, n) in zip(evidence, held, strict=True))
    return (Outcome.IMPROVED if better else Outcome.NOT_FIXED), now


def still_failing(report: Report) -> list[str]:
    """``audit[set] metric=value > limit`` for every failing check of ``report``."""
    return [
        f"{a.id}[{r.dataset}] {c.text()}"
        for a in report.audits
        for r in a.results
        for c in r.checks
        if c.status is Status.FAIL
    ] + [f"{a.id}: error: {a.error or a.message}" for a in report.audits if a.status is Status.ERROR]


@dataclass(frozen=True)
class RepairResult:
    """Everything one repair did and found."""

    status: RepairStatus
    plan: Plan
    before: Report
    after: Report | None = None
    remedies: tuple[RemedyResult, ...] = ()
    price: Price | None = None
    fine_tune: Mapping[str, Any] | None = None
    timeline: Mapping[str, Any] | None = None
    checkpoint: bytes | None = field(default=None, repr=False)
    checkpoint_kind: str = ""
    """``native`` or ``state_dict``."""
    output: str | None = None
    """Where the checkpoint was written, if it was."""
    load_hint: str = ""
    """How to load the checkpoint (``innaudit run fixed.pt`` or the factory command)."""
    wall_s: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        """0 repaired, nothing to repair or only planned; 1 not fixed or no remedy; 2 no verdict."""
        if self.status in (RepairStatus.REPAIRED, RepairStatus.NOTHING_TO_REPAIR, RepairStatus.PLANNED):
            return ExitCode.OK
        if self.after is not None and self.after.exit_code is ExitCode.NO_VERDICT:
            return ExitCode.NO_VERDICT
        return ExitCode.GATE_FAILED

    @property
    def still_failing(self) -> list[str]:
        """The failing checks of the last audit (after, or before when nothing was changed)."""
        return still_failing(self.after if self.after is not None else self.before)

    def block(self) -> dict[str, Any]:
        """The repair as plain data (the report's ``run.repair``)."""
        return {
            "status": self.status.value,
            "exit_code": int(self.exit_code),
            "plan": self.plan.to_dict(),
            "remedies": [r.to_dict() for r in self.remedies],
            "price": self.price.to_dict() if self.price is not None else None,
            "fine_tune": dict(self.fine_tune) if self.fine_tune is not None else None,
            "timeline": dict(self.timeline) if self.timeline is not None else None,
            "still_failing": self.still_failing,
            "checkpoint": {"kind": self.checkpoint_kind, "path": self.output, "load": self.load_hint}
            if self.checkpoint is not None
            else None,
            "wall_s": round(self.wall_s, 3),
            "notes": list(self.notes),
        }

    @property
    def report(self) -> Report:
        """The after report (the before report when nothing was changed) with ``run.repair``."""
        base = self.after if self.after is not None else self.before
        return replace(base, run=replace(base.run, repair=self.block()))
