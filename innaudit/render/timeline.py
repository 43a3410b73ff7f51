"""The monitor timeline: a training run's invertibility checks over steps (``innaudit render LOG.jsonl``).

Reads the records of a monitor log (:func:`innaudit.monitor.read_log`) and draws, per set, the
smallest Jacobian singular value ``sigma_min(J_F)``, the worst relative round-trip error and the
share of non-finite round trips against the training step, with the first failing check marked by
a red line; then the findings in a table. Self-contained HTML (inline SVG, no JavaScript), every
string escaped; the same log gives the same bytes. :func:`text` is the short console form.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from innaudit.render import plots

__all__ = ["FIGURES", "render", "text"]

FIGURES = (
    ("sigma_min", "sigma_min(J_F), smallest over the spectrum samples", True),
    ("rel_error", "worst relative round-trip error (finite samples)", True),
    ("nonfinite", "share of round trips with NaN/Inf", False),
)
"""``(figure key, plot title, log scale)`` of each timeline plot."""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1c2430;
 background:#f6f7f9;margin:0}main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:20px}h2{font-size:17px;margin:24px 0 8px}.plots svg{max-width:100%;height:auto}
.verdict{color:#fff;border-radius:8px;padding:12px 16px;font-size:18px;font-weight:700}
table{border-collapse:collapse;background:#fff;font-size:13px}th,td{border:1px solid #d9dde3;padding:3px 8px;
 text-align:left}th{background:#eef0f3}
"""


def _checks(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("kind") == "check"]


def first_failure(records: Sequence[Mapping[str, Any]]) -> int | None:
    """The step of the first check whose status is ``fail`` or ``error`` (None if none)."""
    return next((int(r["step"]) for r in _checks(records) if r.get("status") in ("fail", "error")), None)


def _series(checks: Sequence[Mapping[str, Any]], key: str) -> dict[str, list[float]]:
    names = sorted({n for c in checks for n in c.get("sets", {})}, key=lambda n: (n != "data", n))
    out: dict[str, list[float]] = {}
    for name in names:
        values = [c.get("sets", {}).get(name, {}).get(key, math.nan) for c in checks]
        out[name] = [float(v) if isinstance(v, (int, float)) else math.nan for v in values]
    return out


def _plot(checks: Sequence[Mapping[str, Any]], key: str, title: str, log: bool, failed: int | None) -> str:
    fig = plots._figure(5.2, 2.6)
    ax = fig.subplots()
    steps = [int(c["step"]) for c in checks]
    drawn: list[float] = []
    for name, ys in _series(checks, key).items():
        if not any(math.isfinite(v) for v in ys) and key != "nonfinite":
            continue  # not measured on this set (the spectrum runs on the data set by default)
        ax.plot(steps, ys, marker=".", label=name)
        drawn += [v for v in ys if math.isfinite(v)]
    if log and drawn and min(drawn) > 0:
        ax.set_yscale("log")
    if failed is not None:
        ax.axvline(failed, color="#c0392b", linestyle="--", linewidth=1.2, label=f"first failure, step {failed}")
    ax.set_xlabel("training step")
    ax.set_title(title, loc="left", parse_math=False, fontsize=10)
    ax.legend(fontsize=7)
    return plots._svg(fig, f"timeline-{key}")


def _findings(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = [(c["step"], f) for c in checks for f in c.get("findings", []) if _news(f)]
    if not rows:
        return "<p>No rule fired at any check.</p>"
    body = "".join(
        f"<tr><td>{_e(step)}</td><td>{_e(f.get('status'))}</td><td>{_e(f.get('rule'))}</td>"
        f"<td>{_e(f.get('dataset'))}</td><td>{_e(f.get('message'))}</td></tr>"
        for step, f in rows
    )
    return (
        "<table><tr><th>step</th><th>status</th><th>rule</th><th>set</th><th>finding (first time; every sigma_min drop)</th>"
        f"</tr>{body}</table>"
    )


def _news(finding: Mapping[str, Any]) -> bool:
    """Whether a finding is news: a rule's first firing on a set, or any new sigma_min drop."""
    return bool(finding.get("first", True)) or finding.get("rule") == "sigma_min_drop"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render(records: Sequence[Mapping[str, Any]]) -> str:
    """The HTML page of a monitor log's records."""
    checks = _checks(records)
    start = next((r for r in records if r.get("kind") == "start"), {})
    failed = first_failure(records)
    colour, verdict = (
        ("#b3261e", f"first failing check at step {failed}")
        if failed is not None
        else ("#1e7b34", f"no failing check in {len(checks)}")
    )
    svgs = "".join(_plot(checks, key, title, log, failed) for key, title, log in FIGURES)
    about = (
        f"model {start.get('model', '?')}, a check every {start.get('every', '?')} steps on "
        f"{', '.join(s.get('name', '?') for s in start.get('sets', []))}; audits "
        f"{', '.join(start.get('audits', []))}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:"><title>innaudit monitor timeline</title>'
        f"<style>{CSS}</style></head><body><main><h1>innaudit monitor timeline</h1>"
        f'<div class="verdict" style="background:{colour}">{_e(verdict)}</div><p>{_e(about)}</p>'
        f'<h2>Over training</h2><div class="plots">{svgs}</div><h2>Findings</h2>{_findings(checks)}'
        "</main></body></html>\n"
    )


def text(records: Sequence[Mapping[str, Any]]) -> str:
    """A few lines for the console: checks, first failure, and each first finding."""
    checks = _checks(records)
    failed = first_failure(records)
    lines = [
        f"{len(checks)} check(s), steps {checks[0]['step']}..{checks[-1]['step']}; "
        + (f"first failing check at step {failed}" if failed is not None else "no failing check")
    ]
    lines += [
        f"  step {c['step']}: {f.get('status')} {f.get('message')}"
        for c in checks
        for f in c.get("findings", [])
        if _news(f)
    ]
    return "\n".join(lines) + "\n"
