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

from innaudit.core.errors import DataError
from innaudit.verdict.report_json import to_plain

__all__ = ["append_record", "from_plain", "read_log"]


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line and flush it, so a crashed run keeps every check so far."""
    line = json.dumps(to_plain(record), allow_nan=False, sort_keys=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()


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
        DataError: the file cannot be read, a line is not JSON, or it holds no ``check`` record.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"monitor log {str(file)!r} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=lambda c: math.nan)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, without its newline: cut short by a kill
                break
            raise DataError(
                f"{file}:{number} is not a JSON object; expected one monitor record per line (innaudit.monitor log)"
            ) from None
        if not isinstance(record, dict) or "kind" not in record:
            raise DataError(f"{file}:{number} is not a monitor record; expected an object with 'kind'")
        records.append(from_plain(record))
    if not any(r["kind"] == "check" for r in records):
        raise DataError(f"{file} holds no monitor check; expected the JSONL log of an InvertibilityMonitor")
    return records
