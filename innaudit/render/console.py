"""The console report: the diagnosis, a borderless table, the findings, the verdict.

In the manner of pytest's short summary and pip-audit's columns:

- a header (model, sha256, loader, input domain, latent, seed, dtype, device);
- the diagnosis (:mod:`innaudit.verdict.diagnosis`): where the model is invertible, where not, where it
  breaks, why, what to do, what to re-run;
- one table row per (audit, set), the audit id once per group on a row naming that audit's
  headline figures (:data:`HEADLINES`), so no column is ever empty;
- one line per failing or warning check, in words with its value and limit
  (``FAIL roundtrip[uniform] 70.0 % of 500 round trips with a NaN or Inf (limit 0 %)``),
  waivers, skipped and crashed audits;
- the verdict line.

The text fits the given width: table numbers never wrap (a long set name folds instead), finding
and diagnosis lines wrap at spaces under a hanging indent, so nothing is cut or ellipsized.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from innaudit.core.errors import clean_text, shorten_middle
from innaudit.core.results import AuditResult, Report, SetResult, Status, lookup
from innaudit.render.common import Finding, findings, fmt, percent
from innaudit.verdict.diagnosis import Diagnosis, diagnose

__all__ = ["HEADLINES", "render", "verdict_line"]

Headline = tuple[str, str, str]
"""(column label, metric path, ``rate`` | ``num`` | ``text``)."""

HEADLINES: dict[str, tuple[Headline, ...]] = {
    "roundtrip": (("non-finite", "nonfinite_fraction", "rate"), ("max rel err", "rel_error_l2.max", "num")),
    "sampling": (("non-finite", "nonfinite_fraction", "rate"), ("max rel err", "rel_error_l2.max", "num")),
    "attack": (
        ("non-finite", "nonfinite_fraction", "rate"),
        ("random n-f", "random_search.nonfinite_fraction", "rate"),
        ("err > thr", "fraction_above_threshold", "rate"),
    ),
    "spectrum": (
        ("non-finite", "nonfinite_fraction", "rate"),
        ("worst cond", "condition.max", "num"),
        ("min sv J_F", "forward.sv_min.min", "num"),
    ),
    "bounds": (
        ("Lip F <=", "forward.bound", "num"),
        ("Lip F^-1 <=", "inverse.bound", "num"),
        ("violations", "violation_fraction", "rate"),
    ),
    "layers": (
        ("non-finite", "nonfinite_fraction", "rate"),
        ("max block err", "block_rel_error.max", "num"),
        ("first failing block", "culprit", "text"),
    ),
    "tokens": (
        ("non-finite", "nonfinite_fraction", "rate"),
        ("max acc err", "chain_rel_error.max", "num"),
        ("leaves rounding at", "where", "text"),
    ),
    "logdet": (("non-finite", "nonfinite_fraction", "rate"), ("max rel err", "rel_error.max", "num")),
    "grid": (
        ("non-finite", "nonfinite_fraction", "rate"),
        ("max error", "error.max", "num"),
        ("worst cond", "condition.max", "num"),
    ),
}
"""Each audit's headline figures; an audit not listed shows its non-finite share and gated metrics."""

STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.ERROR: "bold magenta",
    Status.SKIP: "dim",
}
TAGS = {"WAIVED": "cyan", "EXPIRED": "bold red"}
SET_WIDTH = 24
"""A set name longer than this folds onto a second line (numbers never do)."""


def verdict_line(report: Report) -> str:
    """One line naming the verdict and the exit code, so a log and ``$?`` cannot disagree."""
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
    return f"innaudit: {report.status.value.upper()} (exit {int(report.exit_code)}): {counts or 'no audits'}"


def _headlines(audit: AuditResult) -> tuple[Headline, ...]:
    """The audit's headline figures that at least one of its sets has (no empty column)."""
    heads = HEADLINES.get(audit.id) or _fallback(audit)
    return tuple(
        h for h in heads if any(lookup(r.metrics, h[1]) not in (None, "") or h[2] == "text" for r in audit.results)
    )


def _fallback(audit: AuditResult) -> tuple[Headline, ...]:
    """An audit without :data:`HEADLINES`: its non-finite share and its gated metrics."""
    paths = (
        ["nonfinite_fraction"]
        if any(lookup(r.metrics, "nonfinite_fraction") is not None for r in audit.results)
        else []
    )
    paths += [c.metric for r in audit.results for c in r.checks if c.metric not in paths]
    return tuple(
        (
            p.rpartition(".")[2] if p != "nonfinite_fraction" else "non-finite",
            p,
            "rate" if p == "nonfinite_fraction" else "num",
        )
        for p in paths[:3]
    )


def _figure(result: SetResult, path: str, kind: str) -> str:
    value = lookup(result.metrics, path)
    if kind == "text":
        return escape(str(value)) if value not in (None, "") else "none"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return percent(float(value)) if kind == "rate" and not math.isnan(value) else fmt(value)


def _status(status: Status) -> str:
    return f"[{STYLE[status]}]{status.value.upper()}[/]"


def _table(report: Report) -> Table:
    groups = [(a, _headlines(a)) for a in report.audits]
    columns = max((len(h) for _, h in groups), default=0)
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold", max_width=SET_WIDTH)
    table.add_column(no_wrap=True)
    for _ in range(columns):
        table.add_column(justify="right", no_wrap=True)
    for audit, heads in groups:
        labels = [f"[dim]{h[0]}[/]" for h in heads] + [""] * (columns - len(heads))
        if not audit.results:
            table.add_row(f"[bold]{escape(audit.id)}[/]", "", _status(audit.status), *[""] * columns)
            continue
        table.add_row(f"[bold]{escape(audit.id)}[/]", "[dim]set[/]", "[dim]status[/]", *labels)
        for r in audit.results:
            figures = [_figure(r, path, kind) for _, path, kind in heads] + [""] * (columns - len(heads))
            table.add_row("", escape(r.dataset), _status(r.status), *figures)
    return table


GLUE = "\x00"
"""Stands for a space that must not break a line (``70.0 %``, ``limit 0 %``) while wrapping."""


def _wrap(text: str, width: int, indent: int) -> list[str]:
    """``text`` wrapped at spaces to ``width`` under a hanging ``indent``; a number and its unit
    stay together, a word longer than a line is left whole rather than cut."""
    glued = text.replace(" %", GLUE + "%")
    lines = textwrap.wrap(glued, width=max(width - indent, 20), break_long_words=False, break_on_hyphens=False) or [""]
    return [line.replace(GLUE, " ") for line in lines]


def _hanging(console: Console, rows: Sequence[tuple[str, str, str]], width: int) -> None:
    """Print label | text rows, the text wrapped under a hanging indent after the widest label."""
    indent = max((len(label) for label, _, _ in rows), default=0) + 1
    for label, style, text in rows:
        for i, line in enumerate(_wrap(text, width, indent)):
            head = Text(label.ljust(indent), style=style) if i == 0 else Text(" " * indent)
            console.print(Text.assemble(head, line))


def _diagnosis(console: Console, diagnosis: Diagnosis, verbose: bool, width: int) -> None:
    rows = []
    for s in diagnosis.statements:
        rows.append((f"  {s.kind.label}", "bold", s.text))
        if verbose and s.cite:
            rows.append(("", "", f"evidence: {s.cite}"))
    _hanging(console, rows, width)


def _findings(console: Console, found: list[Finding], verbose: bool, width: int) -> None:
    rows = []
    for f in found:
        text = f"{f.where} {f.text}" + (f" [{f.metric}]" if verbose and f.metric else "")
        rows.append((f.tag, TAGS.get(f.tag, STYLE[f.status]), text))
    indent = max((len(r[0]) for r in rows), default=0) + 1
    for label, style, text in rows:  # the tag is as wide as needed, not padded to the widest
        for i, line in enumerate(_wrap(text, width, indent)):
            head = Text(label + " ", style=style) if i == 0 else Text(" " * indent)
            console.print(Text.assemble(head, line))


def _header(report: Report) -> list[str]:
    target, run = report.target, report.run
    domain = lookup(target, "info.domain") or {}
    levels = "" if domain.get("levels") is None else f", {domain.get('levels')} levels"
    model = shorten_middle(clean_text(target.get("model", "?")), 160)  # the JSON keeps it whole
    first = [
        f"innaudit {model}",
        f"sha256 {str(target.get('sha256', '-'))[:12]}",
        f"loader {target.get('loader', '-')}",
    ]
    second = [
        f"input {tuple(domain.get('shape', ()))} in [{domain.get('low')}, {domain.get('high')}]{levels}",
        f"latent {tuple(target.get('latent_shape', ()))}",
        f"seed {run.get('seed')}",
        f"{run.get('dtype')} on {run.get('device')}",
    ]
    source = lookup(target, "info.source.domain")  # a domain the model does not declare: where from
    return ["  ".join(first), "  ".join(second), *([f"domain: {source}"] if source else [])]


def _wrapped(parts: str, width: int) -> list[str]:
    """Split a header line at its double spaces so no line is over ``width``."""
    lines: list[str] = []
    for piece in parts.split("  "):
        if lines and len(lines[-1]) + 2 + len(piece) <= width:
            lines[-1] += "  " + piece
        else:
            lines += _wrap(piece, width, 0)
    return lines


def render(report: Report, *, color: bool = False, width: int = 120, verbose: bool = False) -> str:
    """The console report as text (ANSI colour codes only when ``color``); ``verbose`` adds
    each finding's metric path and each diagnosis statement's evidence."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=color,
        no_color=not color,
        width=width,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
        soft_wrap=True,
    )
    for line in _header(report):
        for piece in _wrapped(line, width):
            console.print(Text(piece, style="bold" if piece.startswith("innaudit ") else ""))
    for warning in report.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), warning))
    diagnosis = diagnose(report)
    if diagnosis.statements:
        console.print(Text("\nDiagnosis", style="bold"))
        _diagnosis(console, diagnosis, verbose, width)
    console.print()
    console.print(_table(report))
    found = findings(report)
    if found:
        console.print()
        _findings(console, found, verbose, width)
    if report.comparison is not None:
        from innaudit.render.compare import table as comparison_table

        console.print(comparison_table(report.comparison))
    for error in report.errors:
        console.print(Text.assemble(("error: ", "bold magenta"), error))
    console.print(Text(verdict_line(report), style=STYLE[report.status]))
    # a line that wraps inside an outside string must not start a CI workflow command ("::...")
    return "".join(
        (" " + line if line.startswith("::") else line).rstrip() + "\n" for line in buffer.getvalue().splitlines()
    )
