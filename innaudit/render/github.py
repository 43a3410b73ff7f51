"""GitHub Actions workflow commands: one annotation per audit x set that did not pass.

``::error title=innaudit roundtrip (uniform)::27.0 %25 of 500 round trips with a NaN or Inf (limit 0 %25)``
for FAIL and ERROR (the set's findings in the words of the one findings list,
:func:`innaudit.render.common.findings`),
``::warning`` for WARN, ``::notice`` for a waiver (active or expired) and for a regression
against the baseline (``::error`` when ``--fail-on-regression`` gates on it). GitHub shows only
the first few annotations of a step, so the worst come first. In messages ``%``, CR and LF are
escaped (``%25``, ``%0D``, ``%0A``) and ``##[`` is defused; in properties (``title``) also ``:`` and ``,``
(``%3A``, ``%2C``), as the workflow-command syntax requires.
"""

from __future__ import annotations

from innaudit.core.results import Report, Status
from innaudit.render.common import fmt, rows
from innaudit.verdict.report_json import canonical

__all__ = ["escape_data", "escape_property", "render"]

LEVEL = {Status.ERROR: "error", Status.FAIL: "error", Status.WARN: "warning"}


def escape_data(text: object) -> str:
    """Escape a workflow-command message (the legacy ``##[`` command mark, live anywhere in a
    line, is defused as ``# #[``)."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A").replace("##[", "# #[")


def escape_property(text: object) -> str:
    """Escape a workflow-command property value."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _line(level: str, title: str, message: str) -> str:
    return f"::{level} title={escape_property(title)}::{escape_data(message)}"


def render(report: Report) -> str:
    """One workflow command per line, worst first, then a notice with the verdict."""

    report = canonical(report)
    lines = [_line("error", "innaudit run", e) for e in report.errors]
    for row in rows(report, worst_first=True):
        where = f"innaudit {row.audit.id}" + (f" ({row.dataset})" if row.dataset else "")
        if row.status in LEVEL:
            lines.append(_line(LEVEL[row.status], where, row.text or row.status.value))
        elif row.result is not None and row.result.waiver:
            lines.append(_line("notice", where, row.text))
    comparison = report.comparison
    if comparison is not None:
        level = "error" if comparison.gate else "notice"
        for d in comparison.regressions:
            lines.append(
                _line(
                    level,
                    f"innaudit regression {d.audit} ({d.dataset})",
                    f"{d.metric} regressed against {comparison.base}: {fmt(d.base)} -> {fmt(d.new)}",
                )
            )
        for d in comparison.missing if comparison.gate else ():
            lines.append(
                _line(
                    "error",
                    f"innaudit missing {d.audit} ({d.dataset})",
                    f"{d.metric} of {comparison.base} was not measured again (gated)",
                )
            )
    lines += [_line("warning", "innaudit", w) for w in report.warnings]
    audits = ", ".join(f"{a.id} {a.status.value}" for a in report.audits) or "no audits"
    lines.append(
        _line("notice", "innaudit verdict", f"{report.status.value.upper()} (exit {int(report.exit_code)}): {audits}")
    )
    return "\n".join(lines) + "\n"
