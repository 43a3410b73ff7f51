"""Strict JSON: the machine contract (``report.schema.json`` beside this file).

Non-finite floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"``; the output
is produced with ``allow_nan=False``, so it always parses under a strict JSON parser.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from ..results import AuditResult, Check, Report, SetResult

__all__ = ["render", "report_to_dict", "to_plain"]


def to_plain(value: Any) -> Any:
    """Recursively turn report data into JSON-safe plain data (non-finite floats as strings)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return str(value)


def _check(c: Check) -> dict[str, Any]:
    return {"metric": c.metric, "value": c.value, "warn": c.warn, "fail": c.fail, "status": c.status}


def _set(r: SetResult) -> dict[str, Any]:
    return {"dataset": r.dataset, "status": r.status, "message": r.message,
            "metrics": r.metrics, "checks": [_check(c) for c in r.checks], "series": r.series,
            **({"waiver": r.waiver} if r.waiver is not None else {}),
            **({"intervals": {k: list(v) for k, v in r.intervals.items()}} if r.intervals else {})}


def _audit(a: AuditResult) -> dict[str, Any]:
    return {"id": a.id, "title": a.title, "status": a.status, "message": a.message,
            "duration_s": round(a.duration_s, 4), "seed": a.seed, "error": a.error,
            "results": [_set(r) for r in a.results]}


def report_to_dict(report: Report) -> dict[str, Any]:
    """The JSON envelope of DESIGN.md as plain data (``innaudit.report_io`` reads it back)."""
    extra: dict[str, Any] = {}
    if report.comparison is not None:
        from ..baseline import comparison_to_dict

        extra["baseline"] = comparison_to_dict(report.comparison)
    return to_plain({
        "schema_version": report.schema_version,
        "tool": report.tool,
        "run": report.run,
        "target": report.target,
        "summary": {"status": report.status, "exit_code": int(report.exit_code),
                    "fail_on": report.fail_on, "counts": report.counts},
        "audits": [_audit(a) for a in report.audits],
        "errors": list(report.errors),
        "warnings": list(report.warnings),
        **extra,
    })


def render(report: Report) -> str:
    """The report as strict JSON text (indented, trailing newline)."""
    return json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n"
