"""Markdown for a pull-request comment or ``$GITHUB_STEP_SUMMARY``: short, worst first.

The verdict and why, the diagnosis (:mod:`innaudit.verdict.diagnosis`, each statement with its
evidence), then one table row per failing or warning check in words, waiver, skip or error
(worst first), the baseline regressions, and a count of what passed. GitHub refuses step summaries over 1 MiB, so
the text is kept far below it: at most :data:`MAX_ROWS` rows per table, each cell cut to
:data:`MAX_CELL` characters, with a line saying how many were left out. Strings from the model
or data are escaped so they cannot break the table or inject markup.
"""

from __future__ import annotations

import re

from innaudit.core.results import Report, Status
from innaudit.render.common import declarations, findings, fmt, interval_text, rows, verdict_reason
from innaudit.verdict.diagnosis import diagnose
from innaudit.verdict.report_json import canonical

__all__ = ["MAX_CELL", "MAX_ROWS", "render"]

MAX_ROWS = 50
MAX_CELL = 300
ICON = {Status.PASS: "✅", Status.WARN: "⚠️", Status.FAIL: "❌", Status.ERROR: "💥", Status.SKIP: "⏭️"}


def _md(text: object) -> str:
    """Escape text for a Markdown table cell (one line, no markup, no HTML)."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    if len(flat) > MAX_CELL:
        flat = flat[: MAX_CELL - 1] + "…"
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", flat)


def _diagnosis(report: Report) -> list[str]:
    statements = diagnose(report, declarations()).statements
    if not statements:
        return []
    lines = ["", "**Diagnosis**", ""]
    lines += [
        f"- **{s.kind.label}:** {_md(s.text)}" + (f" <sub>{_md(s.cite)}</sub>" if s.cite else "")
        for s in statements[:MAX_ROWS]
    ]
    return lines


def _findings(report: Report) -> list[str]:
    bad = sorted(findings(report), key=lambda f: -f.status.rank)
    if not bad:
        return []
    lines = ["", "| status | audit | set | finding |", "|---|---|---|---|"]
    lines += [
        f"| {ICON[f.status]} {f.tag} | {_md(f.audit)} | {_md(f.dataset)} | {_md(f.text)} |" for f in bad[:MAX_ROWS]
    ]
    if len(bad) > MAX_ROWS:
        lines.append(f"\n…and {len(bad) - MAX_ROWS} more; see the HTML or JSON report.")
    return lines


def _baseline(report: Report) -> list[str]:
    comparison = report.comparison
    if comparison is None:
        return []
    counts = ", ".join(f"{n} {c}" for c, n in comparison.counts.items() if n) or "nothing compared"
    lines = [
        "",
        f"**Against the baseline** {_md(comparison.base)}: {counts}"
        + (" (a regression fails the gate)" if comparison.gate else ""),
    ]
    changed = [d for d in comparison.deltas if d.change.value in ("regressed", "improved")]
    if changed:
        lines += ["", "| change | audit | set | metric | base | new |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {d.change.value} | {_md(d.audit)} | {_md(d.dataset)} | {_md(d.metric)} | {fmt(d.base)} | {fmt(d.new)} |"
            for d in changed[:MAX_ROWS]
        ]
        if len(changed) > MAX_ROWS:
            lines.append(f"\n…and {len(changed) - MAX_ROWS} more changed metrics.")
    return lines


def _rates(report: Report) -> list[str]:
    """The non-finite share of every set, as a count with its 95 % interval."""
    texts = [
        f"{r.audit.id} on {r.dataset}: {interval_text(r.result, 'nonfinite_fraction')}"
        for r in rows(report)
        if r.result is not None and "nonfinite_fraction" in r.result.intervals
    ]
    if not texts:
        return []
    more = [f"…and {len(texts) - MAX_ROWS} more."] if len(texts) > MAX_ROWS else []
    return ["", "Non-finite samples (95 % interval): " + _md("; ".join(texts[:MAX_ROWS])), *more]


def render(report: Report) -> str:
    """The report as GitHub-flavoured Markdown."""

    report = canonical(report)
    status = report.status
    clean = [
        a.id for a in report.audits if a.status in (Status.PASS, Status.SKIP) and not any(r.waiver for r in a.results)
    ]
    lines = [
        f"### {ICON[status]} innaudit: {status.value.upper()} (exit {int(report.exit_code)})",
        "",
        f"**{_md(report.target.model or '?')}** · sha256 "
        f"{_md(str(report.target.sha256 or '-')[:12])} · seed {report.run.seed} · "
        f"{_md(report.run.dtype)} on {_md(report.run.device)}",
        "",
        f"**Why:** {_md(verdict_reason(report))}",
        "",
    ]
    lines += [f"> ⚠️ {_md(w)}" for w in report.warnings[:MAX_ROWS]]
    lines += [f"> 💥 {_md(e)}" for e in report.errors[:MAX_ROWS]]
    lines += _diagnosis(report)
    lines += _findings(report)
    lines += _baseline(report)
    if clean:
        lines += ["", f"Passed or skipped: {_md(', '.join(clean[:MAX_ROWS]))}."]
    lines += _rates(report)
    return "\n".join(lines) + "\n"
