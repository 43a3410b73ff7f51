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
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from innaudit.core.errors import clean_text, clean_tree, shorten_middle
from innaudit.core.results import AuditResult, Comparison, Report, SetResult, Status, lookup
from innaudit.render.common import Finding, declarations, findings, fmt, percent
from innaudit.verdict.diagnosis import Diagnosis, diagnose

__all__ = ["HEADLINES", "regression_words", "render", "verdict_line"]

Headline = tuple[str, str, str]
"""(column label, metric path, ``rate`` | ``num`` | ``text`` | ``precision``: an index into
float64, float32, float16, bfloat16, -1 for none)."""

LADDER = ("float64", "float32", "float16", "bfloat16")
"""The ``precision`` audit's ``lowest_invertible`` ladder (``innaudit.audits.precision.LADDER``;
a test holds the two equal, the renderer imports no audit)."""

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
    "precision": (
        ("non-finite", "required.nonfinite_fraction", "rate"),
        ("max rel err", "required.rel_error_l2.max", "num"),
        ("invertible to", "lowest_invertible", "precision"),
    ),
    "gradient": (
        ("non-finite", "nonfinite_fraction", "rate"),
        ("max rel err", "rel_error_l2.max", "num"),
        ("stateful", "stateful_layers", "num"),
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
TAGS = {"WAIVED": "cyan", "EXPIRED": "bold red", "CUT": "yellow"}
SET_WIDTH = 24
"""A set name longer than this folds onto a second line (numbers never do)."""


def verdict_line(report: Report) -> str:
    """One line naming the verdict and the exit code, so a log and ``$?`` cannot disagree; a
    regression against a baseline names its first metrics (a gated one is what failed)."""
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
    line = f"innaudit: {report.status.value.upper()} (exit {int(report.exit_code)}): {counts or 'no audits'}"
    return line + regression_words(report.comparison)


def regression_words(comparison: Comparison | None, shown: int = 3) -> str:
    """``; 5 metrics regressed against the baseline (gated): roundtrip[x] rel_error_l2.max, ...``
    (empty without regressions)."""
    if comparison is None or not comparison.regressions:
        return ""
    found = comparison.regressions
    names = ", ".join(f"{d.audit}[{d.dataset}] {d.metric}" for d in found[:shown])
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    gate = " (gated)" if comparison.gate else ""
    return f"; {len(found)} metric(s) regressed against the baseline{gate}: {names}{more}"


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
        return str(value) if value not in (None, "") else "none"
    if kind == "precision":
        index = value if isinstance(value, int) and not isinstance(value, bool) else None
        return LADDER[index] if index is not None and 0 <= index < len(LADDER) else "none" if index == -1 else "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return percent(float(value)) if kind == "rate" and not math.isnan(value) else fmt(value)


def _fit(cells: Sequence[str], widths: Sequence[int]) -> int:
    return sum(widths) + 2 * (len(widths) - 1) if cells or widths else 0


@dataclass(frozen=True)
class _Group:
    """One audit's rows: its headline labels, and per set its name, status and figures."""

    audit: AuditResult
    labels: tuple[str, ...]
    rows: tuple[tuple[str, Status, tuple[str, ...]], ...]

    @property
    def widths(self) -> list[int]:
        """The width of each figure column: its label or its widest figure."""
        return [max([len(label)] + [len(r[2][i]) for r in self.rows]) for i, label in enumerate(self.labels)]


def _groups(report: Report) -> list[_Group]:
    out = []
    for audit in report.audits:
        heads = _headlines(audit)
        rows = tuple(
            (clean_text(r.dataset), r.status, tuple(clean_text(_figure(r, path, kind)) for _, path, kind in heads))
            for r in audit.results
        )
        out.append(_Group(audit, tuple(h[0] for h in heads), rows))
    return out


def _line(pieces: Sequence[tuple[str, str]]) -> Text:
    """Cells joined by two spaces, each with its style, trailing blanks dropped."""
    text = Text()
    for i, (cell, style) in enumerate(pieces):
        if i:
            text.append("  ")
        text.append(cell, style=style)
    text.rstrip()
    return text


STACK_BELOW = 11
"""An audit whose figures leave the set column less than this many characters puts its figures
on a line of their own under each set (a narrow terminal), rather than squeezing the names."""


@dataclass(frozen=True)
class _Layout:
    """The columns every group shares: audit id, set, status; and the terminal width."""

    id_width: int
    set_width: int
    status_width: int
    width: int

    def room(self, g: _Group) -> int:
        """What the set column could have next to this group's figures."""
        return self.width - self.id_width - self.status_width - 4 - (_fit(g.labels, g.widths) + 2 if g.labels else 0)


def _layout(groups: Sequence[_Group], width: int) -> _Layout:
    id_width = max((len(g.audit.id) for g in groups), default=0)
    names = [name for g in groups for name, _, _ in g.rows]
    status_width = max([len("status")] + [len(s.value) for g in groups for _, s, _ in g.rows])
    base = _Layout(id_width, 0, status_width, width)
    rooms = [base.room(g) for g in groups if g.rows and base.room(g) >= STACK_BELOW]
    set_width = max(len("set"), min([SET_WIDTH, max((len(n) for n in names), default=3), *rooms]))
    return _Layout(id_width, set_width, status_width, width)


def _group_lines(g: _Group, at: _Layout) -> list[Text]:
    """One audit's header and rows; its figures on lines of their own when they do not fit."""
    pad = (" " * at.id_width, "")
    if not g.rows:
        verdict = (g.audit.status.value.upper(), STYLE[g.audit.status])
        return [_line([(g.audit.id.ljust(at.id_width), "bold"), (" " * at.set_width, ""), verdict])]
    figures, stacked = g.widths, at.room(g) < at.set_width
    labels = [(label.rjust(w), "dim") for label, w in zip(g.labels, figures, strict=True)]
    head = [(g.audit.id.ljust(at.id_width), "bold"), ("set".ljust(at.set_width), "dim"), ("status", "dim")]
    lines = (
        [_line(head), _line([pad, *labels])]
        if stacked
        else [_line([*head[:2], ("status".ljust(at.status_width), "dim"), *labels])]
    )
    for name, status, cells in g.rows:
        own_line = len(name) > at.set_width
        if own_line:  # at spaces, a word longer than the line folded, nothing dropped
            for piece in textwrap.wrap(name, max(20, at.width - at.id_width - 2), break_on_hyphens=False):
                lines.append(_line([pad, (piece, "")]))
        shown = [(cell.rjust(w), "") for cell, w in zip(cells, figures, strict=True)]
        row = [
            pad,
            (("" if own_line else name).ljust(at.set_width), ""),
            (status.value.upper().ljust(at.status_width), STYLE[status]),
        ]
        lines += [_line(row), _line([pad, *shown])] if stacked else [_line(row + shown)]
    return lines


def _table(report: Report, width: int) -> list[Text]:
    """The audit x set table laid out for ``width`` columns.

    The audit id, set and status columns are as wide in every group, so they line up; each
    audit's figure columns are as wide as its own labels and figures need. Numbers never wrap;
    a set name wider than the set column (at most :data:`SET_WIDTH`, less when an audit's
    figures need the room: the set column is the same for every audit) gets a line of its own
    above its figures, so no name is cut; on a terminal too narrow for an audit's figures
    beside the names, they go on a line of their own under each set."""
    groups = _groups(report)
    at = _layout(groups, width)
    return [line for g in groups for line in _group_lines(g, at)]


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
    each finding's metric path and each diagnosis statement's evidence. Every string of the
    report is sanitized and capped first (:func:`~innaudit.core.errors.clean_tree`)."""
    report = clean_tree(report)
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
    diagnosis = diagnose(report, declarations())
    if diagnosis.statements:
        console.print(Text("\nDiagnosis", style="bold"))
        _diagnosis(console, diagnosis, verbose, width)
    console.print()
    for row in _table(report, width):
        console.print(row)
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
