"""Results: statuses, gate checks, per-set and per-audit results, and the Report.

Everything here is frozen plain data. The verdict (``Report.status``) and the exit code
(``Report.exit_code``) are computed here, once, from the results; renderers only read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .baseline import Comparison

__all__ = [
    "SCHEMA_VERSION",
    "AuditResult",
    "Check",
    "ExitCode",
    "Report",
    "SetResult",
    "Status",
    "worst",
]

SCHEMA_VERSION = 1


class Status(str, Enum):
    """The outcome of a check, a set, an audit or a run."""

    PASS = "pass"
    SKIP = "skip"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """Severity order: pass < skip < warn < fail < error."""
        return list(Status).index(self)


class ExitCode(IntEnum):
    """Process exit codes: 2 (no trustworthy verdict) outranks 1 (a gate failed)."""

    OK = 0
    GATE_FAILED = 1
    NO_VERDICT = 2


def worst(statuses: list[Status] | tuple[Status, ...], default: Status = Status.PASS) -> Status:
    """The most severe of ``statuses`` (``default`` when there are none)."""
    return max(statuses, key=lambda s: s.rank, default=default)


@dataclass(frozen=True)
class Check:
    """One metric held against its thresholds: ``value > fail`` fails, ``value > warn`` warns.

    A NaN value fails: a statistic that could not be computed cannot pass a gate.
    """

    metric: str
    value: float
    warn: float | None
    fail: float | None
    status: Status


@dataclass(frozen=True)
class SetResult:
    """An audit's outcome on one data set (or one temperature, one block...).

    ``series`` holds plain-data arrays for the HTML plots, by convention:
    ``error_histogram`` ``{"edges": [log10 edges], "counts": [...], "nonfinite": n}``;
    ``curve`` ``{"step": [...], <metric>: [...]}``; ``blocks`` ``{"name": [...], <metric>: [...]}``;
    ``values`` ``{<metric>: [per-sample values]}``; ``grid`` ``{"x": [...], "y": [...],
    <metric>: [[row], ...]}``; ``images`` ``{<label>: [image as nested lists], ...}``.
    """

    dataset: str
    status: Status
    metrics: Mapping[str, Any]
    checks: tuple[Check, ...] = ()
    message: str = ""
    series: Mapping[str, Any] = field(default_factory=dict)
    waiver: Mapping[str, Any] | None = None
    """The waiver that matched this set (``innaudit.waivers``): ``{"reason", "expires",
    "expired", "waived_status"}``; an unexpired waiver turned ``waived_status`` into PASS."""
    artifacts: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Big picklable arrays (numpy) for files the CLI writes on request (``--save-witnesses``);
    never rendered, not part of the JSON report."""
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """95 % Clopper-Pearson interval ``(low, high)`` of every declared rate, by metric path
    (``innaudit.intervals``); gates use the point value, renderers show the interval."""


@dataclass(frozen=True)
class AuditResult:
    """One audit's outcome over all its sets."""

    id: str
    title: str
    status: Status
    message: str
    duration_s: float
    seed: int
    results: tuple[SetResult, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Report:
    """Everything one run found, and the verdict.

    Attributes:
        tool: ``{"name", "version"}``.
        run: seed, device, dtype, versions, the effective config.
        target: the model: its argument, sha256, loader, shapes, metadata.
        audits: one result per selected audit, in registry order.
        errors: problems outside any single audit (nothing audited, ...).
        fail_on: the least severe status that fails the gate (``fail``, or ``warn``).
        warnings: things the user must know that are not findings (``--trust-checkpoint``).
    """

    tool: Mapping[str, str]
    run: Mapping[str, Any]
    target: Mapping[str, Any]
    audits: tuple[AuditResult, ...]
    errors: tuple[str, ...] = ()
    fail_on: Status = Status.FAIL
    warnings: tuple[str, ...] = field(default=())
    schema_version: int = SCHEMA_VERSION
    comparison: Comparison | None = None
    """Metrics against a baseline report (``--baseline``; ``innaudit.baseline``)."""

    @property
    def status(self) -> Status:
        """``error`` if anything errored, else the worst audit status (skips count as pass)."""
        if self.errors:
            return Status.ERROR
        found = worst(tuple(a.status for a in self.audits))
        found = Status.PASS if found is Status.SKIP else found
        if self.comparison is not None and self.comparison.gate_failed:
            return worst((found, Status.FAIL))  # a regression gate fails like a threshold
        return found

    @property
    def exit_code(self) -> ExitCode:
        """0 pass, 1 gate failed, 2 no trustworthy verdict; 2 outranks 1."""
        status = self.status
        if status is Status.ERROR:
            return ExitCode.NO_VERDICT
        if status.rank >= self.fail_on.rank:
            return ExitCode.GATE_FAILED
        return ExitCode.OK

    @property
    def counts(self) -> dict[str, int]:
        """Number of audits per status, every status present."""
        counts = {s.value: 0 for s in Status}
        for audit in self.audits:
            counts[audit.status.value] += 1
        return counts
