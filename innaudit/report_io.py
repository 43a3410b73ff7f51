"""Reading saved JSON reports back into :class:`~innaudit.results.Report` objects.

``report_from_dict`` inverts ``innaudit.render.json.report_to_dict`` exactly: for every report
``r``, ``report_to_dict(report_from_dict(report_to_dict(r))) == report_to_dict(r)``. So
``innaudit render report.json -o html=PATH`` gives the same bytes as ``-o html=PATH`` on the run.
The strings ``"nan"``, ``"inf"`` and ``"-inf"`` become floats again wherever a number belongs
(metrics, series, checks, baseline deltas); statuses become :class:`Status`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UsageError
from .results import SCHEMA_VERSION, AuditResult, Check, Report, SetResult, Status

__all__ = ["canonical", "load_report", "report_from_dict"]

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


def _number(value: Any) -> Any:
    return _NONFINITE.get(value, value) if isinstance(value, str) else value


def _check(data: Mapping[str, Any]) -> Check:
    return Check(data["metric"], _number(data["value"]), _number(data.get("warn")), _number(data.get("fail")),
                 Status(data["status"]))


def _set(data: Mapping[str, Any]) -> SetResult:
    return SetResult(data["dataset"], Status(data["status"]), _numbers(data["metrics"]),
                     tuple(_check(c) for c in data.get("checks", [])), data.get("message", ""),
                     _numbers(data.get("series", {})), waiver=data.get("waiver"),
                     intervals={str(k): (float(v[0]), float(v[1]))
                                for k, v in data.get("intervals", {}).items()})


def _audit(data: Mapping[str, Any]) -> AuditResult:
    return AuditResult(data["id"], data.get("title", data["id"]), Status(data["status"]),
                       data["message"], float(data["duration_s"]), int(data.get("seed", 0)),
                       tuple(_set(r) for r in data["results"]), data.get("error"))


def report_from_dict(data: Mapping[str, Any]) -> Report:
    """Rebuild a Report from its JSON envelope (the inverse of ``report_to_dict``).

    Raises:
        UsageError: the envelope has another ``schema_version`` or lacks a required field.
    """
    from .baseline import comparison_from_dict

    version = data.get("schema_version") if isinstance(data, Mapping) else None
    if version != SCHEMA_VERSION:
        raise UsageError(f"the report has schema_version {version!r}; this innaudit reads "
                         f"{SCHEMA_VERSION}: re-create it with this innaudit version")
    try:
        baseline = data.get("baseline")
        return Report(tool=data["tool"], run=data["run"], target=data["target"],
                      audits=tuple(_audit(a) for a in data["audits"]),
                      errors=tuple(data.get("errors", ())),
                      fail_on=Status(data["summary"].get("fail_on", "fail")),
                      warnings=tuple(data.get("warnings", ())), schema_version=version,
                      comparison=None if baseline is None else comparison_from_dict(baseline))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"the report is not an innaudit JSON report ({type(exc).__name__}: {exc}); "
                         "expected the output of -o json") from None


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
        raise UsageError(f"{what} {str(file)!r} is not JSON ({exc.msg} at line {exc.lineno}); "
                         "expected the output of -o json") from None
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
    from .render.json import report_to_dict

    return report_from_dict(report_to_dict(report))
