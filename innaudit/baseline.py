"""Baselines: every metric of a report held against the same metric of an earlier report.

Each numeric metric that an audit declares (``Audit.metrics``; every numeric leaf but ``n`` for an
audit this version does not know) is matched by (audit id, set, metric path) and classified:

- ``unchanged`` when ``|new - base| <= tol`` with ``tol = max(|base| * rel_tol, abs_tol)``
  (evidently's ApproxValue), or both are NaN, or both are the same infinity;
- ``regressed`` when it moved beyond ``tol`` in the worse direction, or became NaN;
- ``improved`` when it moved beyond ``tol`` in the better direction, or stopped being NaN;
- ``new`` / ``missing`` when only the new / only the base report has it (Qodana's buckets).

Higher is worse unless the audit lists the metric (or a dotted prefix of it) in its
``higher_is_better`` class variable (smallest singular values, for example).

Reading a regression: the checkpoint (or the code, or the environment: compare the two
reports' ``run`` blocks) got numerically worse on that metric, by more than the tolerance. With
``--fail-on-regression`` any regression fails the gate (exit 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import UsageError
from .gate import leaves
from .results import Report

__all__ = ["ABS_TOL", "Change", "Comparison", "Delta", "REL_TOL", "classify", "compare",
           "comparison_from_dict", "comparison_to_dict", "higher_is_better"]

REL_TOL = 0.1
"""Default relative tolerance: 10% of the base value."""
ABS_TOL = 1e-6
"""Default absolute tolerance: about ten float32 rounding steps of a unit-sized value."""


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
    def gate_failed(self) -> bool:
        """True when the regression gate is on and something regressed."""
        return self.gate and bool(self.regressions)


def higher_is_better(audit_id: str, metric: str) -> bool:
    """Whether ``metric`` of ``audit_id`` improves upwards (declared by the audit class)."""
    from .audits import REGISTRY

    cls = REGISTRY.get(audit_id)
    declared = getattr(cls, "higher_is_better", ()) if cls is not None else ()
    return any(metric == p or metric.startswith(p + ".") for p in declared)


def classify(base: float, new: float, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL,
             higher_better: bool = False) -> Change:
    """Classify one metric's move: ``tol = max(|base| * rel_tol, abs_tol)``; NaN is the worst."""
    if math.isnan(base) or math.isnan(new):
        if math.isnan(base) and math.isnan(new):
            return Change.UNCHANGED
        return Change.REGRESSED if math.isnan(new) else Change.IMPROVED
    if base == new:  # also the same infinity
        return Change.UNCHANGED
    tol = abs_tol if math.isinf(base) else max(abs(base) * rel_tol, abs_tol)
    if not math.isinf(new) and not math.isinf(base) and abs(new - base) <= tol:
        return Change.UNCHANGED
    worse = new < base if higher_better else new > base
    return Change.REGRESSED if worse else Change.IMPROVED


def _leaves(metrics: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """The numeric leaves of nested metrics (strings, booleans and lists are not compared)."""
    for path, value in leaves(metrics):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield path, float(value)


def _numbers(report: Report) -> dict[tuple[str, str, str], float]:
    from .audits import REGISTRY

    out: dict[tuple[str, str, str], float] = {}
    for audit in report.audits:
        declared = REGISTRY[audit.id].metrics if audit.id in REGISTRY else None
        for r in audit.results:
            for path, value in _leaves(r.metrics):
                if (path in declared) if declared else path != "n":
                    out[(audit.id, r.dataset, path)] = value
    return out


def compare(base: Report, new: Report, *, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL,
            gate: bool = False, base_name: str | None = None) -> Comparison:
    """Classify every metric of ``new`` against ``base`` (see the module docstring)."""
    if base.schema_version != new.schema_version:
        raise UsageError(f"the baseline has schema_version {base.schema_version}, the report "
                         f"{new.schema_version}; re-create the baseline with this innaudit")
    if rel_tol < 0 or abs_tol < 0 or math.isnan(rel_tol) or math.isnan(abs_tol):
        raise UsageError(f"tolerances must be >= 0; got rel {rel_tol}, abs {abs_tol}")
    old, now = _numbers(base), _numbers(new)
    deltas = []
    for key in [*now, *(k for k in old if k not in now)]:
        up = higher_is_better(key[0], key[2])
        if key not in old:
            change = Change.NEW
        elif key not in now:
            change = Change.MISSING
        else:
            change = classify(old[key], now[key], rel_tol, abs_tol, up)
        deltas.append(Delta(*key, old.get(key), now.get(key), change, up))
    deltas.sort(key=lambda d: d.change.rank)  # stable: report order within a bucket
    name = base_name if base_name is not None else str(base.target.get("model", "baseline"))
    return Comparison(name, rel_tol, abs_tol, gate, tuple(deltas))


def comparison_to_dict(comparison: Comparison) -> dict[str, Any]:
    """Plain data for the JSON report's ``baseline`` block (non-finite numbers as strings)."""
    from .render.json import to_plain

    return to_plain({
        "base": comparison.base, "rel_tol": comparison.rel_tol, "abs_tol": comparison.abs_tol,
        "fail_on_regression": comparison.gate, "gate_failed": comparison.gate_failed,
        "counts": comparison.counts,
        "deltas": [{"audit": d.audit, "set": d.dataset, "metric": d.metric, "base": d.base,
                    "new": d.new, "change": d.change, "higher_is_better": d.higher_is_better}
                   for d in comparison.deltas],
    })


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)  # float("nan"), float("inf") and float("-inf") read the JSON strings


def comparison_from_dict(data: Mapping[str, Any]) -> Comparison:
    """Invert :func:`comparison_to_dict`."""
    deltas = tuple(Delta(d["audit"], d["set"], d["metric"], _number(d["base"]), _number(d["new"]),
                         Change(d["change"]), bool(d.get("higher_is_better", False)))
                   for d in data["deltas"])
    return Comparison(str(data["base"]), float(data["rel_tol"]), float(data["abs_tol"]),
                      bool(data["fail_on_regression"]), deltas)

