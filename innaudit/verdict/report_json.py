"""The report's JSON form, both ways: to plain data, from plain data, and the canonical Report.

``report_from_dict`` inverts ``report_to_dict`` exactly: for every report
``r``, ``report_to_dict(report_from_dict(report_to_dict(r))) == report_to_dict(r)``. So
``innaudit render report.json -o html=PATH`` gives the same bytes as ``-o html=PATH`` on the run.
The strings ``"nan"``, ``"inf"`` and ``"-inf"`` become floats again wherever a number belongs
(metrics, series, checks, baseline deltas); statuses become :class:`Status`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, cast

from innaudit.core.errors import UsageError
from innaudit.core.metrics import Direction
from innaudit.core.results import (
    SCHEMA_VERSION,
    AuditResult,
    Change,
    Check,
    Comparison,
    Delta,
    Report,
    SetResult,
    Status,
)

__all__ = [
    "canonical",
    "comparison_from_dict",
    "comparison_to_dict",
    "load_report",
    "report_from_dict",
    "report_to_dict",
    "to_plain",
]

_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _numbers(value: Any) -> Any:
    """Plain data with the non-finite strings turned back into floats."""
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _check(data: Mapping[str, Any]) -> Check:
    # a written check always has a value (NaN / inf as strings), so _number gives a float
    return Check(
        data["metric"],
        cast(float, _number(data["value"])),
        _number(data.get("warn")),
        _number(data.get("fail")),
        Status(data["status"]),
        Direction(data.get("direction", Direction.HIGHER_WORSE.value)),
    )


def _set(data: Mapping[str, Any]) -> SetResult:
    return SetResult(
        data["dataset"],
        Status(data["status"]),
        _numbers(data["metrics"]),
        tuple(_check(c) for c in data.get("checks", [])),
        data.get("message", ""),
        _numbers(data.get("series", {})),
        waiver=data.get("waiver"),
        intervals={str(k): (float(v[0]), float(v[1])) for k, v in data.get("intervals", {}).items()},
    )


def _audit(data: Mapping[str, Any]) -> AuditResult:
    return AuditResult(
        data["id"],
        data.get("title", data["id"]),
        Status(data["status"]),
        data["message"],
        float(data["duration_s"]),
        int(data.get("seed", 0)),
        tuple(_set(r) for r in data["results"]),
        data.get("error"),
    )


def report_from_dict(data: Mapping[str, Any]) -> Report:
    """Rebuild a Report from its JSON envelope (the inverse of ``report_to_dict``).

    Raises:
        UsageError: the envelope has another ``schema_version`` or lacks a required field.
    """
    version = data.get("schema_version") if isinstance(data, Mapping) else None
    if version != SCHEMA_VERSION:
        raise UsageError(
            f"the report has schema_version {version!r}; this innaudit reads "
            f"{SCHEMA_VERSION}: re-create it with this innaudit version"
        )
    try:
        baseline = data.get("baseline")
        return Report(
            tool=data["tool"],
            run=data["run"],
            target=data["target"],
            audits=tuple(_audit(a) for a in data["audits"]),
            errors=tuple(data.get("errors", ())),
            fail_on=Status(data["summary"].get("fail_on", "fail")),
            warnings=tuple(data.get("warnings", ())),
            schema_version=version,
            comparison=None if baseline is None else comparison_from_dict(baseline),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"the report is not an innaudit JSON report ({type(exc).__name__}: {exc}); expected the output of -o json"
        ) from None


def load_report(path: str | Path, what: str = "report") -> Report:
    """Read and rebuild a JSON report file; every problem is one-line :class:`UsageError`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{what} {str(file)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {str(file)!r} is not UTF-8 text; expected a JSON report") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} {str(file)!r} is not JSON ({exc.msg} at line {exc.lineno}); expected the output of -o json"
        ) from None
    if not isinstance(data, Mapping):
        raise UsageError(f"{what} {str(file)!r} holds a {type(data).__name__}; expected a JSON report object")
    try:
        return report_from_dict(data)
    except UsageError as exc:
        raise UsageError(f"{what} {str(file)!r}: {exc}") from None


def canonical(report: Report) -> Report:
    """The report as it reads back from its JSON (durations rounded, tuples as lists...).

    Renderers draw from this, so the output of a run and of ``innaudit render`` are identical.
    """

    return report_from_dict(report_to_dict(report))


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


def _check_dict(c: Check) -> dict[str, Any]:
    return {
        "metric": c.metric,
        "value": c.value,
        "warn": c.warn,
        "fail": c.fail,
        "status": c.status,
        "direction": c.direction,
    }


def _set_dict(r: SetResult) -> dict[str, Any]:
    return {
        "dataset": r.dataset,
        "status": r.status,
        "message": r.message,
        "metrics": r.metrics,
        "checks": [_check_dict(c) for c in r.checks],
        "series": r.series,
        **({"waiver": r.waiver} if r.waiver is not None else {}),
        **({"intervals": {k: list(v) for k, v in r.intervals.items()}} if r.intervals else {}),
    }


def _audit_dict(a: AuditResult) -> dict[str, Any]:
    return {
        "id": a.id,
        "title": a.title,
        "status": a.status,
        "message": a.message,
        "duration_s": round(a.duration_s, 4),
        "seed": a.seed,
        "error": a.error,
        "results": [_set_dict(r) for r in a.results],
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    """The report's JSON envelope as plain data (:func:`report_from_dict` reads it back)."""
    extra: dict[str, Any] = {}
    if report.comparison is not None:
        extra["baseline"] = comparison_to_dict(report.comparison)
    return to_plain(
        {
            "schema_version": report.schema_version,
            "tool": report.tool,
            "run": report.run,
            "target": report.target,
            "summary": {
                "status": report.status,
                "exit_code": int(report.exit_code),
                "fail_on": report.fail_on,
                "counts": report.counts,
            },
            "audits": [_audit_dict(a) for a in report.audits],
            "errors": list(report.errors),
            "warnings": list(report.warnings),
            **extra,
        }
    )


def comparison_to_dict(comparison: Comparison) -> dict[str, Any]:
    """Plain data for the JSON report's ``baseline`` block (non-finite numbers as strings)."""
    return to_plain(
        {
            "base": comparison.base,
            "rel_tol": comparison.rel_tol,
            "abs_tol": comparison.abs_tol,
            "fail_on_regression": comparison.gate,
            "gate_failed": comparison.gate_failed,
            "counts": comparison.counts,
            "deltas": [
                {
                    "audit": d.audit,
                    "set": d.dataset,
                    "metric": d.metric,
                    "base": d.base,
                    "new": d.new,
                    "change": d.change,
                    "higher_is_better": d.higher_is_better,
                }
                for d in comparison.deltas
            ],
        }
    )


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)  # float("nan"), float("inf") and float("-inf") read the JSON strings


def comparison_from_dict(data: Mapping[str, Any]) -> Comparison:
    """Invert :func:`comparison_to_dict`."""
    deltas = tuple(
        Delta(
            d["audit"],
            d["set"],
            d["metric"],
            _number(d["base"]),
            _number(d["new"]),
            Change(d["change"]),
            bool(d.get("higher_is_better", False)),
        )
        for d in data["deltas"]
    )
    return Comparison(
        str(data["base"]), float(data["rel_tol"]), float(data["abs_tol"]), bool(data["fail_on_regression"]), deltas
    )
