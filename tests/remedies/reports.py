"""Small hand-made reports for the rule tests: one audit, a few sets, the metrics a rule reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from innaudit.core.results import AuditResult, Check, Report, SetResult, Status

__all__ = ["audit", "report", "roundtrip_set", "set_result"]

ROLES = {"digits:test": "in-distribution", "uniform": "ood", "gaussian": "ood", "rademacher": "ood"}


def set_result(dataset: str, metrics: Mapping[str, Any], failing: Sequence[tuple[str, float]] = ()) -> SetResult:
    """A set whose checks fail on ``failing`` (metric, value) and pass otherwise."""
    checks = tuple(Check(m, v, None, 0.0, Status.FAIL) for m, v in failing)
    return SetResult(dataset, Status.FAIL if checks else Status.PASS, dict(metrics), checks)


def roundtrip_set(dataset: str, nonfinite: float, median: float, largest: float) -> SetResult:
    """A roundtrip result with its gate applied (non-finite > 0 fails, max rel error > 1e-2 fails)."""
    failing = [("nonfinite_fraction", nonfinite)] if nonfinite > 0 else []
    failing += [("rel_error_l2.max", largest)] if largest > 1e-2 else []
    return set_result(
        dataset,
        {"nonfinite_fraction": nonfinite, "rel_error_l2": {"median": median, "max": largest}},
        failing,
    )


def audit(audit_id: str, *results: SetResult) -> AuditResult:
    """An audit whose status is the worst of its sets."""
    status = Status.FAIL if any(r.status is Status.FAIL for r in results) else Status.PASS
    return AuditResult(audit_id, audit_id, status, "", 0.0, 0, tuple(results))


def report(*audits: AuditResult, roles: Mapping[str, str] = ROLES) -> Report:
    """A report over the sets of ``roles`` (``run.datasets``)."""
    datasets = [{"name": n, "spec": n, "role": r, "size": 100} for n, r in roles.items()]
    return Report({"name": "innaudit"}, {"datasets": datasets, "seed": 0}, {"model": "m"}, tuple(audits))
