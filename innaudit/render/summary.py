"""The plain-text summary: the verdict line, then one line per finding (``Report.summary()``,
the message of ``innaudit.assert_invertible``).

The findings are the one list the console, Markdown, GitHub and JUnit renderers draw
(:func:`innaudit.render.common.findings`), each as ``TAG audit[set] text``; the run's own errors
follow as ``ERROR text``.
"""

from __future__ import annotations

from innaudit.core.results import Report
from innaudit.render.common import findings

__all__ = ["render"]


def render(report: Report) -> str:
    """``innaudit: FAIL (exit 1) for MODEL`` and the findings, one a line (no trailing newline)."""
    model = report.target.model or "the model"
    head = f"innaudit: {report.status.value.upper()} (exit {int(report.exit_code)}) for {model}"
    lines = [f"  {f.tag} {f.where} {f.text}" for f in findings(report)]
    return "\n".join([head, *lines, *(f"  ERROR {e}" for e in report.errors)])
