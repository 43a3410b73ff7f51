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
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, cast

from innaudit.core.errors import InnauditError, UsageError, clean_text
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
    WaiverOutcome,
)

__all__ = [
    "MAX_REPORT_BYTES",
    "MAX_STRING",
    "canonical",
    "comparison_from_dict",
    "comparison_to_dict",
    "load_report",
    "read_text_capped",
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


def _waiver(data: Mapping[str, Any] | None) -> WaiverOutcome | None:
    if data is None:
        return None
    return WaiverOutcome(
        str(data["reason"]), str(data["expires"]), bool(data["expired"]), Status(data["waived_status"])
    )


def _set(data: Mapping[str, Any]) -> SetResult:
    return SetResult(
        data["dataset"],
        Status(data["status"]),
        _numbers(data["metrics"]),
        tuple(_check(c) for c in data.get("checks", [])),
        data.get("message", ""),
        _numbers(data.get("series", {})),
        waiver=_waiver(data.get("waiver")),
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


MAX_REPORT_BYTES = 64 << 20
"""Largest report file read (64 MiB): about five times the largest report innaudit writes
(the ``grid`` audit at the paper's 320 x 320 resolution)."""

MAX_STRING = 4000
"""Longest string a renderer draws (:func:`canonical`); the JSON report keeps every string whole."""


def read_text_capped(path: str | Path, limit: int, what: str, error: type[InnauditError]) -> str:
    """The UTF-8 text of a saved report or log at ``path``, at most ``limit`` bytes.

    A path may be anything (``/dev/zero``, a multi-gigabyte file, a folder): at most
    ``limit + 1`` bytes are read, so memory stays bounded whatever it is (as the config reader
    does, :mod:`innaudit.config.yaml`).

    Raises:
        ``error``: the file cannot be read, is larger than ``limit`` (also a device that never
            ends), or is not UTF-8; the message names ``what`` and the path.
    """
    shown = repr(clean_text(path, 300))
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"{what} {shown} cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(
            f"{what} {shown} is over {limit >> 20} MiB, more than innaudit ever writes; expected its own output"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {shown} is not UTF-8 text; expected innaudit's JSON output") from None


def load_report(path: str | Path, what: str = "report", fractions: Callable[[str, str], bool] | None = None) -> Report:
    """Read and rebuild a JSON report file; every problem is one-line :class:`UsageError`.

    The file is read up to :data:`MAX_REPORT_BYTES`, then held to the shape innaudit writes
    (:func:`innaudit.verdict.report_shape.check_shape`; ``fractions(audit, path)`` says which
    metrics are shares in [0, 1]), so a crafted file is "not an innaudit report", never a crash.
    """
    from innaudit.verdict.report_shape import check_shape

    shown = repr(clean_text(path, 300))
    text = read_text_capped(path, MAX_REPORT_BYTES, what, UsageError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} {shown} is not JSON ({exc.msg} at line {exc.lineno}); expected the output of -o json"
        ) from None
    except RecursionError:
        raise UsageError(f"{what} {shown} is JSON nested too deep to be an innaudit report") from None
    if not isinstance(data, Mapping):
        raise UsageError(f"{what} {shown} holds a {type(data).__name__}; expected a JSON report object")
    try:
        if data.get("schema_version") == SCHEMA_VERSION:  # another version: report_from_dict says so
            check_shape(data, fractions or (lambda audit, metric: False))
    except UsageError as exc:
        raise UsageError(f"{what} {shown} is not an innaudit report: {exc}") from None
    try:
        return report_from_dict(data)
    except UsageError as exc:
        raise UsageError(f"{what} {shown}: {exc}") from None


def canonical(report: Report) -> Report:
    """The report as it reads back from its JSON (durations rounded, tuples as lists...), with
    every string cut to :data:`MAX_STRING` characters.

    Renderers draw from this, so the output of a run and of ``innaudit render`` are identical,
    and a huge name or message (a crafted report) cannot blow up an HTML page.
    """

    return report_from_dict(_capped(report_to_dict(report)))


def _capped(value: Any) -> Any:
    """Plain data with every string (keys too) cut to :data:`MAX_STRING` characters."""
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING else value[: MAX_STRING - 1] + "…"
    if isinstance(value, Mapping):
        return {_capped(k): _capped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_capped(v) for v in value]
    return value


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
        **({"waiver": r.waiver.to_dict()} if r.waiver is not None else {}),
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
            "run": report.run.to_dict(),
            "target": report.target.to_dict(),
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
