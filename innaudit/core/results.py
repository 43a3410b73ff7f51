"""Results: statuses, gate checks, per-set and per-audit results, and the Report.

Everything here is frozen plain data. The verdict (``Report.status``) and the exit code
(``Report.exit_code``) are computed here, once, from the results; renderers only read them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

from innaudit.core.metrics import Direction
from innaudit.core.records import RunRecord, TargetRecord

__all__ = [
    "SCHEMA_VERSION",
    "AuditResult",
    "Change",
    "Check",
    "Comparison",
    "Delta",
    "ExitCode",
    "Report",
    "SetResult",
    "Status",
    "WaiverOutcome",
    "leaves",
    "lookup",
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


def lookup(metrics: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``"error_l2.max"``) of nested metrics, or None if absent."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def leaves(metrics: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths and values of the scalar leaves of nested metrics (lists left out)."""
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from leaves(value, path + ".")
        elif not isinstance(value, (list, tuple)):
            yield path, value


def _short(value: float) -> str:
    """A number in 3 significant digits (``inf``, ``nan`` as such)."""
    return f"{value:.3g}"


def worst(statuses: list[Status] | tuple[Status, ...], default: Status = Status.PASS) -> Status:
    """The most severe of ``statuses`` (``default`` when there are none)."""
    return max(statuses, key=lambda s: s.rank, default=default)


@dataclass(frozen=True)
class Check:
    """One metric held against its thresholds, in the metric's declared direction.

    Higher worse: ``value > fail`` fails, ``value > warn`` warns. Higher better (a smallest
    singular value): ``value < fail`` fails, ``value < warn`` warns. A NaN value fails: a
    statistic that could not be computed cannot pass a gate.
    """

    metric: str
    value: float
    warn: float | None
    fail: float | None
    status: Status
    direction: Direction = Direction.HIGHER_WORSE

    def beyond(self, limit: float) -> bool:
        """Whether ``value`` lies on the bad side of ``limit``."""
        if self.direction is Direction.HIGHER_BETTER:
            return self.value < limit
        return self.value > limit

    @property
    def limit(self) -> float | None:
        """The limit this check's status was decided by (fail for FAIL, else warn)."""
        return self.fail if self.status is Status.FAIL else self.warn

    def text(self) -> str:
        """``metric=value > limit`` (``<`` for a metric better when higher); NaN says so."""
        if math.isnan(self.value):
            return f"{self.metric}=nan (could not be computed)"
        limit = self.limit
        if limit is None:
            return f"{self.metric}={_short(self.value)}"
        side = "<" if self.direction is Direction.HIGHER_BETTER else ">"
        return f"{self.metric}={_short(self.value)} {side} {_short(limit)}"


@dataclass(frozen=True)
class WaiverOutcome:
    """What a waiver (``innaudit.config.waivers``) did to one set: the status it found
    (``waived_status``, FAIL or WARN), whether it had ``expired`` (then the set kept that
    status; else the set passes), its ``reason`` and its ``expires`` date (``YYYY-MM-DD``)."""

    reason: str
    expires: str
    expired: bool
    waived_status: Status

    def to_dict(self) -> dict[str, Any]:
        """The report's ``waiver`` object: ``{"reason", "expires", "expired", "waived_status"}``."""
        return {
            "reason": self.reason,
            "expires": self.expires,
            "expired": self.expired,
            "waived_status": self.waived_status.value,
        }


@dataclass(frozen=True)
class SetResult:
    """An audit's outcome on one data set (or one temperature, one block...).

    ``series`` holds plain-data arrays for the HTML plots, by convention:
    ``error_histogram`` ``{"edges": [log10 edges], "counts": [...], "nonfinite": n}``;
    ``curve`` ``{"step": [...], <metric>: [...]}``; ``blocks`` ``{"name": [...], <metric>: [...]}``;
    ``precisions`` ``{"name": [precision names], <metric>: [...]}``;
    ``values`` ``{<metric>: [per-sample values]}``; ``grid`` ``{"x": [...], "y": [...],
    <metric>: [[row], ...]}``; ``images`` ``{<label>: [image as nested lists], ...}``.
    """

    dataset: str
    status: Status
    metrics: Mapping[str, Any]
    checks: tuple[Check, ...] = ()
    message: str = ""
    series: Mapping[str, Any] = field(default_factory=dict)
    waiver: WaiverOutcome | None = None
    """What the waiver that matched this set did (``innaudit.config.waivers``); an unexpired
    waiver turned ``waived_status`` into PASS."""
    artifacts: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Big picklable arrays (numpy) for files the CLI writes on request (``--save-witnesses``);
    never rendered, not part of the JSON report."""
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """95 % Clopper-Pearson interval ``(low, high)`` of every declared rate, by metric path
    (``innaudit.core.intervals``); gates use the point value, renderers show the interval."""


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


class Change(str, Enum):
    """How one metric moved against the baseline."""

    REGRESSED = "regressed"
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    NEW = "new"
    MISSING = "missing"

    @property
    def rank(self) -> int:
        """Display order, most important first."""
        return list(Change).index(self)


@dataclass(frozen=True)
class Delta:
    """One metric in both reports (``base`` or ``new`` is None when it is absent there)."""

    audit: str
    dataset: str
    metric: str
    base: float | None
    new: float | None
    change: Change
    higher_is_better: bool = False

    @property
    def key(self) -> str:
        """``audit/set/metric``."""
        return f"{self.audit}/{self.dataset}/{self.metric}"


@dataclass(frozen=True)
class Comparison:
    """A report's metrics against a baseline report.

    Attributes:
        base: what the baseline was (its path, or its model).
        rel_tol: relative tolerance; ``abs_tol``: absolute tolerance.
        gate: whether a regression fails the gate (``--fail-on-regression``).
        deltas: every compared metric, worst first.
    """

    base: str
    rel_tol: float
    abs_tol: float
    gate: bool
    deltas: tuple[Delta, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Number of metrics per change, every change present."""
        counts = {c.value: 0 for c in Change}
        for d in self.deltas:
            counts[d.change.value] += 1
        return counts

    @property
    def regressions(self) -> tuple[Delta, ...]:
        """The regressed metrics."""
        return tuple(d for d in self.deltas if d.change is Change.REGRESSED)

    @property
    def missing(self) -> tuple[Delta, ...]:
        """The metrics of the baseline that the new report lacks (its audit errored, was skipped
        or left out)."""
        return tuple(d for d in self.deltas if d.change is Change.MISSING)

    @property
    def gate_failed(self) -> bool:
        """True when the regression gate is on and a metric regressed or went missing: a gated
        metric that was not measured again cannot be said to hold."""
        return self.gate and bool(self.regressions or self.missing)


@dataclass(frozen=True)
class Report:
    """Everything one run found, and the verdict.

    Attributes:
        tool: ``{"name", "version"}``.
        run: seed, device, dtype, versions, the effective config (:class:`RunRecord`; a
            plain mapping given here becomes one).
        target: the model: its argument, sha256, loader, shapes, metadata
            (:class:`TargetRecord`; a plain mapping given here becomes one).
        audits: one result per selected audit, in registry order.
        errors: problems outside any single audit (nothing audited, ...).
        fail_on: the least severe status that fails the gate (``fail``, or ``warn``).
        warnings: things the user must know that are not findings (``--trust-checkpoint``).
    """

    tool: Mapping[str, str]
    run: RunRecord
    target: TargetRecord
    audits: tuple[AuditResult, ...]
    errors: tuple[str, ...] = ()
    fail_on: Status = Status.FAIL
    warnings: tuple[str, ...] = field(default=())
    schema_version: int = SCHEMA_VERSION
    comparison: Comparison | None = None
    """Metrics against a baseline report (``--baseline``; computed by ``innaudit.verdict.baseline``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", RunRecord.of(self.run))
        object.__setattr__(self, "target", TargetRecord.of(self.target))

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

    def audit(self, audit_id: str) -> AuditResult:
        """The result of one audit; KeyError naming the audits the report holds."""
        for audit in self.audits:
            if audit.id == audit_id:
                return audit
        raise KeyError(f"no audit {audit_id!r} in this report; it holds {[a.id for a in self.audits]}")

    def result(self, audit_id: str, dataset: str | None = None) -> SetResult:
        """One audit's result on one set (the only set when ``dataset`` is None and there is one)."""
        audit = self.audit(audit_id)
        names = [r.dataset for r in audit.results]
        if dataset is None and len(names) == 1:
            return audit.results[0]
        for r in audit.results:
            if r.dataset == dataset:
                return r
        raise KeyError(f"audit {audit_id!r} has no result for set {dataset!r}; its sets: {names}")

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        return (
            f"<Report {self.status.value.upper()} exit={int(self.exit_code)} "
            f"model={self.target.get('model', '?')!r} audits: {counts or 'none'}>"
        )
