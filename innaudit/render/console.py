"""The console report: a rich table per run, plain text when colour is off."""

from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..gate import lookup
from ..results import Report, SetResult, Status
from .common import fmt, note, rate_text

__all__ = ["render", "verdict_line"]

NUMBERS = {"err median": "error_l2.median", "err p99": "error_l2.p99", "err max": "error_l2.max",
           "rel max": "rel_error_l2.max"}
"""Columns of numbers: header -> metric path (blank where an audit has no such metric)."""

STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red",
         Status.ERROR: "bold magenta", Status.SKIP: "dim"}


def _nonfinite(result: SetResult) -> str:
    metrics = result.metrics
    value = lookup(metrics, "nonfinite_fraction")
    if value is None:
        return ""
    if "nonfinite_fraction" in result.intervals:
        return rate_text(result, "nonfinite_fraction", short=True)
    if 0 < value < 0.001:
        return "<0.1%"  # never print 0.0% for a model that produced a NaN
    if 0.999 < value < 1:
        return ">99.9%"
    return f"{100 * value:.1f}%"


def _status(status: Status) -> str:
    return f"[{STYLE[status]}]{status.value.upper()}[/]"


def verdict_line(report: Report) -> str:
    """One line naming the verdict and the exit code, so a log and ``$?`` cannot disagree."""
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
    return f"innaudit: {report.status.value.upper()} (exit {int(report.exit_code)}): {counts or 'no audits'}"


def _table(report: Report) -> Table:
    table = Table(show_lines=False, expand=False, title_justify="left")
    for name in ("audit", "set", "status", "non-finite", *NUMBERS):
        table.add_column(name, justify="left" if name in ("audit", "set", "status") else "right",
                         no_wrap=True)
    table.add_column("note", overflow="fold")
    for audit in report.audits:
        if not audit.results:
            table.add_row(audit.id, "", _status(audit.status), "", *[""] * len(NUMBERS),
                          escape(audit.message))
            continue
        for r in audit.results:
            numbers = [fmt(lookup(r.metrics, path), 2) for path in NUMBERS.values()]
            table.add_row(audit.id, escape(r.dataset), _status(r.status), _nonfinite(r),
                          *numbers, escape(note(r)))
    return table


def render(report: Report, *, color: bool = False, width: int = 120) -> str:
    """The console report as text (with ANSI colour codes only when ``color``)."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, no_color=not color, width=width,
                      color_system="standard" if color else None, highlight=False, soft_wrap=False)
    target = report.target
    domain = lookup(target, "info.domain") or {}
    console.print(f"[bold]innaudit[/] {escape(str(target.get('model', '?')))}  "
                  f"sha256 {escape(str(target.get('sha256', '-'))[:12])}  loader {escape(str(target.get('loader', '-')))}")
    console.print(f"input {tuple(domain.get('shape', ()))} in [{domain.get('low')}, {domain.get('high')}]"
                  f"{'' if domain.get('levels') is None else ', ' + str(domain.get('levels')) + ' levels'}"
                  f"  latent {tuple(target.get('latent_shape', ()))}  seed {report.run.get('seed')}"
                  f"  {report.run.get('dtype')} on {report.run.get('device')}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(_table(report))
    if report.comparison is not None:
        from .compare import table as comparison_table

        console.print(comparison_table(report.comparison))
    for error in report.errors:
        console.print(f"[bold magenta]error:[/] {escape(error)}")
    console.print(f"[{STYLE[report.status]}]{escape(verdict_line(report))}[/]")
    return buffer.getvalue()
