"""The monitor's JSONL log: one strict-JSON object per line, appended as training goes.

The first line is the ``start`` record (the monitor's settings and sets); every check adds a
``check`` record (:meth:`innaudit.monitor.MonitorResult.to_dict`). Non-finite numbers are written
as the strings ``"nan"``, ``"inf"``, ``"-inf"``, as in the JSON report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from innaudit.core.errors import DataError, UsageError, clean_text
from innaudit.safeio.atomic import append_text
from innaudit.safeio.targets import check_target
from innaudit.verdict.report_json import read_text_capped, to_plain

__all__ = ["MAX_LOG_BYTES", "append_record", "from_plain", "open_log", "read_log"]

MAX_LOG_BYTES = 64 << 20
"""Largest monitor log read (64 MiB): a check record is about 1 KB, so some 60,000 checks."""


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line and flush it, so a crashed run keeps every check so far.

    Raises:
        OSError: the log cannot be written (the monitor warns once and goes on).
    """
    line = json.dumps(to_plain(record), allow_nan=False, sort_keys=True)
    append_text(path, line + "\n")


def open_log(path: Path, start: Mapping[str, Any]) -> None:
    """Check ``path`` as an output and append the ``start`` record: an existing log is kept
    and extended, never truncated.

    Raises:
        UsageError: ``path`` is a folder, a socket, in a missing or unwritable folder, or the
            record cannot be written.
    """
    label = f"monitor log {clean_text(path, 300)!r}"
    check_target(label, path)
    try:
        append_record(path, start)
    except OSError as exc:
        raise UsageError(f"{label} cannot be written ({exc.strerror or exc}); choose another path") from None


def from_plain(value: Any) -> Any:
    """The inverse of the string encoding of non-finite numbers, recursively."""
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, Mapping):
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a monitor log; a last line cut short by a killed run is left out.

    Raises:
        DataError: the file cannot be read or is over :data:`MAX_LOG_BYTES`, a line is not
            JSON or not a record of the shape the monitor writes, or it holds no ``check``.
    """
    file = Path(path)
    text = read_text_capped(file, MAX_LOG_BYTES, "monitor log", DataError)
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=lambda c: math.nan)
        except (json.JSONDecodeError, RecursionError):
            if number == len(lines):  # the last line, without its newline: cut short by a kill
                break
            raise DataError(
                f"{file}:{number} is not a JSON object; expected one monitor record per line (innaudit.monitor log)"
            ) from None
        if not isinstance(record, dict) or "kind" not in record:
            raise DataError(f"{file}:{number} is not a monitor record; expected an object with 'kind'")
        problem = _shape_problem(record)
        if problem:
            raise DataError(f"{file}:{number} is not a monitor record: {problem}")
        records.append(from_plain(record))
    if not any(r["kind"] == "check" for r in records):
        raise DataError(f"{file} holds no monitor check; expected the JSONL log of an InvertibilityMonitor")
    return records


_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "start": {"every": (int,), "audits": (list,), "sets": (list,), "model": (str,)},
    "check": {"step": (int,), "status": (str,), "findings": (list,), "sets": (dict,)},
}
"""The fields of each record kind that the timeline reads, with their JSON types."""


def _shape_problem(record: Mapping[str, Any]) -> str | None:
    """What makes ``record`` other than a record the monitor writes (None when it is one)."""
    fields = _FIELDS.get(record["kind"]) if isinstance(record["kind"], str) else None
    if fields is None:
        return f"kind {clean_text(repr(record['kind']), 40)}; expected 'start' or 'check'"
    for key, types in fields.items():
        value = record.get(key)
        if key in record and (not isinstance(value, types) or isinstance(value, bool)):
            return f"{key} is {type(value).__name__}; expected {types[0].__name__}"
    if record["kind"] == "start":
        return _items_problem(record.get("audits", []), (str,), "audits") or _items_problem(
            record.get("sets", []), (dict,), "sets"
        )
    findings = record.get("findings", [])
    problem = _items_problem(findings, (dict,), "findings")
    for finding in findings if problem is None else ():
        for key in ("rule", "dataset", "status", "message"):
            if key in finding and not isinstance(finding[key], str):
                return f"findings[].{key} is {type(finding[key]).__name__}; expected str"
    for name, figures in record.get("sets", {}).items():
        if not isinstance(figures, dict):
            return f"sets.{clean_text(name, 40)} is {type(figures).__name__}; expected an object of numbers"
    return problem


def _items_problem(items: list[Any], types: tuple[type, ...], name: str) -> str | None:
    bad = next((item for item in items if not isinstance(item, types)), None)
    return None if bad is None else f"{name} holds a {type(bad).__name__}; expected {types[0].__name__} items"
