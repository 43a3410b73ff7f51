"""Strict JSON: the machine contract (``report.schema.json`` beside this file).

Non-finite floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"``; the output
is produced with ``allow_nan=False``, so it always parses under a strict JSON parser. The
plain-data form is :func:`innaudit.report_json.report_to_dict`.
"""

from __future__ import annotations

import json

from ..report_json import report_to_dict
from ..results import Report

__all__ = ["render"]


def render(report: Report) -> str:
    """The report as strict JSON text (indented, trailing newline)."""
    return json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n"
