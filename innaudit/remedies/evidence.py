"""Reading a report for the repair rules: its sets by audit and role, metric values, statuses.

The rules read only the structured results (metric paths, statuses, the sets' roles in
``run.datasets``), never a message or the diagnosis prose, so they keep working however the
words change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from innaudit.core.results import Report, SetResult, Status, lookup

__all__ = ["DATA", "MODEL_SAMPLES", "OOD", "Evidence", "ReportView"]

DATA, OOD, MODEL_SAMPLES = "in-distribution", "ood", "model-samples"
"""A set's role: the model's own data, a held-out (noise, other data) set, or its own samples
(the ``sampling`` audit's ``prior@T=...`` sets)."""


@dataclass(frozen=True)
class Evidence:
    """One number a remedy is chosen on: ``audit[dataset] metric = value``."""

    audit: str
    dataset: str
    metric: str
    value: float

    @property
    def text(self) -> str:
        """``roundtrip[uniform] nonfinite_fraction=0.306``."""
        return f"{self.audit}[{self.dataset}] {self.metric}={self.value:.3g}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {"audit": self.audit, "dataset": self.dataset, "metric": self.metric, "value": self.value}


class ReportView:
    """The parts of a report the rules read."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.audits = {a.id: a for a in report.audits}
        datasets = report.run.get("datasets") or []
        self.roles = {d.get("name"): d.get("role") for d in datasets if isinstance(d, Mapping)}

    def role(self, audit: str, dataset: str) -> str:
        """:data:`DATA`, :data:`OOD` or :data:`MODEL_SAMPLES` (sets the run does not list, such as
        the sampling audit's prior draws, are the model's own samples)."""
        if audit == "sampling":
            return MODEL_SAMPLES
        role = self.roles.get(dataset)
        return DATA if role == DATA else OOD if role == OOD else MODEL_SAMPLES

    def sets(self, audit: str, *roles: str) -> Iterator[SetResult]:
        """The audit's set results whose role is one of ``roles`` (all when none is given)."""
        found = self.audits.get(audit)
        if found is None:
            return
        for result in found.results:
            if not roles or self.role(audit, result.dataset) in roles:
                yield result

    def status(self, audit: str) -> Status | None:
        """The audit's status, or None when it did not run."""
        found = self.audits.get(audit)
        return None if found is None else found.status

    @staticmethod
    def value(result: SetResult, path: str) -> float | None:
        """The number at ``path`` (``rel_error_l2.median``), or None when absent or not a number."""
        value = lookup(result.metrics, path)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    def evidence(self, audit: str, result: SetResult, path: str) -> Evidence | None:
        """:class:`Evidence` for ``path`` of ``result`` when it holds a number."""
        value = self.value(result, path)
        return None if value is None else Evidence(audit, result.dataset, path, value)

    @staticmethod
    def failed(result: SetResult, metric: str) -> bool:
        """Whether the check on ``metric`` (a path, or its prefix) is FAIL."""
        return any(c.status is Status.FAIL and c.metric.startswith(metric) for c in result.checks)

    @staticmethod
    def above(value: float | None, limit: float) -> bool:
        """``value > limit``, with NaN counted as above (a statistic that broke)."""
        return value is not None and (math.isnan(value) or value > limit)
