"""Strict JSON: the machine contract (``report.schema.json`` beside this file).

Non-finite floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"``; the output
is produced with ``allow_nan=False``, so it always parses under a strict JSON parser. The
plain-data form is :func:`innaudit.verdict.report_json.report_to_dict`, plus ``diagnosis``
(:func:`innaudit.verdict.diagnosis.diagnose`): computed from the results, never read back, so a saved
report re-renders with the same diagnosis.
"""

from __future__ import annotations

import json
from typing import Any

from innaudit.core.results import Report
from innaudit.render.common import declarations
from innaudit.verdict.diagnosis import diagnose, diagnosis_to_dict
from innaudit.verdict.report_json import report_to_dict, to_plain

__all__ = ["render", "report_dict"]


def report_dict(report: Report) -> dict[str, Any]:
    """The JSON envelope as plain data, with the diagnosis after the results."""
    return {**report_to_dict(report), "diagnosis": to_plain(diagnosis_to_dict(diagnose(report, declarations())))}


def render(report: Report) -> str:
    """The report as strict JSON text (indented, trailing newline)."""
    return json.dumps(report_dict(report), indent=2, allow_nan=False) + "\n"
