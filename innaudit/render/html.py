"""The HTML report: one self-contained page a person reads to decide whether to trust a checkpoint.

Self-contained: inline CSS, plots as inline SVG (``innaudit.render.plots``), no JavaScript, and a
Content-Security-Policy that forbids every external request. Every string that comes from the
model, the checkpoint, the data or the config is escaped with ``html.escape``. The JSON report is
embedded in ``<script type="application/json" id="innaudit-report">`` (``<`` written as
``\\u003c``, so no ``</script>`` can end it early), so the page turns back into data::

    data = json.loads(re.search(r'id="innaudit-report">(.*?)</script>', page, re.S)[1])

Everything on the page is drawn from the Report as it reads back from its JSON
(``report_json.canonical``), nothing from the clock, so ``innaudit render report.json -o html=PATH``
writes the same bytes as the run did.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from innaudit.core.results import AuditResult, Report, SetResult, Status, leaves, lookup
from innaudit.render import plots
from innaudit.render.common import declarations, findings, fmt, interval_text, set_findings, verdict_reason
from innaudit.verdict.diagnosis import diagnose
from innaudit.verdict.report_json import canonical

__all__ = ["render"]

COLOURS = {
    Status.PASS: "#1e7b34",
    Status.WARN: "#a86400",
    Status.FAIL: "#b3261e",
    Status.ERROR: "#8e24aa",
    Status.SKIP: "#6b7280",
}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1c2430;background:#f6f7f9;margin:0}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:20px;margin:8px 0}h2{font-size:17px;margin:28px 0 8px}h3{font-size:15px;margin:0 0 6px}
.verdict{color:#fff;border-radius:8px;padding:14px 18px;margin:12px 0}
.verdict .big{font-size:26px;font-weight:700;letter-spacing:.5px}
.verdict .why{margin-top:4px}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:13px}
.meta dt{color:#5b6573}.meta dd{margin:0;word-break:break-all}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #d9dde3;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef0f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;color:#fff;border-radius:4px;padding:0 7px;font-size:12px;font-weight:700}
.card{background:#fff;border:1px solid #d9dde3;border-left:6px solid #999;border-radius:6px;
 padding:10px 14px;margin:10px 0}
.plots{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}.plots svg{max-width:100%;height:auto}
.note{color:#3d4754}.warn{background:#fff6e0;border:1px solid #f0c36d;border-radius:6px;padding:6px 10px;margin:6px 0}
.err{background:#fde8ec;border:1px solid #e8a0ad;border-radius:6px;padding:6px 10px;margin:6px 0}
details summary{cursor:pointer;color:#3d4754}footer{color:#6b7280;font-size:12px;margin-top:32px}
.diagnosis{background:#eef5fc;border:1px solid #d9dde3;border-left:6px solid #1f5f99;border-radius:6px;
 padding:8px 14px;margin:12px 0}.diagnosis h2{margin:4px 0 6px}
.diagnosis dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0}
.diagnosis dt{font-weight:700;color:#1f5f99}.diagnosis dd{margin:0}.cite{color:#6b7280;font-size:12px}
details.audit>summary{font-size:17px;font-weight:700;margin:20px 0 8px;color:#1c2430}
"""


def _e(value: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _badge(status: Status) -> str:
    return f'<span class="badge" style="background:{COLOURS[status]}">{status.value.upper()}</span>'


def _header(report: Report) -> str:
    status, target, run = report.status, report.target, report.run
    domain = lookup(target, "info.domain") or {}
    meta = [
        ("model", target.get("model", "?")),
        ("sha256", target.get("sha256", "-")),
        ("loader", target.get("loader", "-")),
        (
            "input",
            f"{tuple(domain.get('shape', ()))} in [{domain.get('low')}, {domain.get('high')}]"
            + ("" if domain.get("levels") is None else f", {domain.get('levels')} levels"),
        ),
        ("latent", tuple(target.get("latent_shape", ()))),
        (
            "run",
            f"seed {run.get('seed')}, {run.get('dtype')} on {run.get('device')}, "
            f"started {run.get('started_at', '-')}, {fmt(run.get('duration_s'))} s",
        ),
        ("tool", f"{report.tool.get('name')} {report.tool.get('version')}, gate fails on {report.fail_on.value}"),
    ]
    rows_html = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta)
    counts = "audits: " + (", ".join(f"{n} {s}" for s, n in report.counts.items() if n) or "none")
    return (
        f'<div class="verdict" style="background:{COLOURS[status]}">'
        f'<div class="big">{status.value.upper()} (exit {int(report.exit_code)})</div>'
        f'<div class="why">{_e(verdict_reason(report))}</div><div>{_e(counts)}</div></div>'
        f'<dl class="meta">{rows_html}</dl>'
    )


def _notices(report: Report) -> str:
    parts = [f'<div class="warn">warning: {_e(w)}</div>' for w in report.warnings]
    parts += [f'<div class="err">error: {_e(e)}</div>' for e in report.errors]
    return "".join(parts)


def _diagnosis(report: Report) -> str:
    statements = diagnose(report, declarations()).statements
    if not statements:
        return ""
    items = "".join(
        f'<dt>{_e(s.kind.label)}</dt><dd title="{_e(s.cite)}">{_e(s.text)}'
        + (f' <span class="cite">({_e(s.cite)})</span>' if s.cite else "")
        + "</dd>"
        for s in statements
    )
    return f'<section class="diagnosis" id="diagnosis"><h2>Diagnosis</h2><dl>{items}</dl></section>'


def _summary(report: Report) -> str:
    found = sorted(findings(report), key=lambda f: -f.status.rank)
    if not found:
        return '<h2>Findings</h2><div class="note">Every check passed its thresholds.</div>'
    body = "".join(
        f'<tr><td><a href="#{_e(f.audit)}">{_e(f.audit)}</a></td><td>{_e(f.dataset)}</td>'
        f"<td>{_badge(f.status) if not f.label else _e(f.tag)}</td>"
        f'<td class="note" title="{_e(f.metric)}">{_e(f.text)}</td></tr>'
        for f in found
    )
    return (
        "<h2>Findings, worst first</h2><table><tr><th>audit</th><th>set</th><th>status</th>"
        f"<th>finding</th></tr>{body}</table>"
    )


def _checks(result: SetResult) -> str:
    if not result.checks:
        return ""
    body = "".join(
        f'<tr><td>{_e(c.metric)}</td><td class="num">{_e(fmt(c.value))}</td>'
        f'<td class="num">{_e(fmt(c.warn))}</td><td class="num">{_e(fmt(c.fail))}</td>'
        f"<td>{_badge(c.status)}</td></tr>"
        for c in result.checks
    )
    return (
        "<table><tr><th>gated metric</th><th>value</th><th>warn &gt;</th><th>fail &gt;</th>"
        f"<th>status</th></tr>{body}</table>"
    )


def _metrics(result: SetResult) -> str:
    body = "".join(
        f'<tr><td>{_e(path)}</td><td class="num">{_e(fmt(value))}</td><td>{_e(interval_text(result, path))}</td></tr>'
        for path, value in leaves(result.metrics)
    )
    if not body:
        return ""
    return f"<details><summary>all metrics</summary><table>{body}</table></details>"


def _plots(audit_index: int, set_index: int, audit: AuditResult, result: SetResult) -> str:
    figures = []
    for kind in plots.KINDS:
        if kind not in result.series:
            continue
        title = f"{audit.id} · {result.dataset} · {kind.replace('_', ' ')}"
        try:
            figures.append(plots.plot_series(kind, result.series[kind], title, f"a{audit_index}s{set_index}{kind}"))
        except Exception as exc:  # a malformed series loses its plot, never the report
            figures.append(
                f'<div class="note">plot of {_e(kind)} unavailable: {_e(type(exc).__name__)}: {_e(exc)}</div>'
            )
    return f'<div class="plots">{"".join(figures)}</div>' if figures else ""


def _set(audit_index: int, set_index: int, audit: AuditResult, result: SetResult) -> str:
    found = set_findings(audit, result)
    text = "; ".join(f.text for f in found) if found else result.message
    return (
        f'<div class="card" style="border-left-color:{COLOURS[result.status]}">'
        f"<h3>{_badge(result.status)} {_e(result.dataset)}</h3>"
        + (f'<div class="note">{_e(text)}</div>' if text else "")
        + _checks(result)
        + _metrics(result)
        + _plots(audit_index, set_index, audit, result)
        + "</div>"
    )


def _audit(i: int, audit: AuditResult) -> str:
    title = f"{_badge(audit.status)} {_e(audit.id)}: {_e(audit.title)}"
    body = (
        f'<div class="note">{_e(audit.message)} ({fmt(audit.duration_s)} s, seed {audit.seed})</div>'
        + (f'<div class="err">{_e(audit.error)}</div>' if audit.error else "")
        + "".join(_set(i, j, audit, result) for j, result in enumerate(audit.results))
    )
    if audit.status in (Status.PASS, Status.SKIP):  # passing audits collapsed
        return f'<details class="audit" id="{_e(audit.id)}"><summary>{title}</summary>{body}</details>'
    return f'<h2 id="{_e(audit.id)}">{title}</h2>{body}'


def _audits(report: Report) -> Iterable[str]:
    for i, audit in enumerate(report.audits):
        yield _audit(i, audit)


def _comparison(report: Report) -> str:
    comparison = report.comparison
    if comparison is None:
        return ""
    counts = ", ".join(f"{n} {c}" for c, n in comparison.counts.items() if n) or "nothing compared"
    shown = [d for d in comparison.deltas if d.change.value != "unchanged"]
    body = "".join(
        f"<tr><td>{_e(d.change.value)}</td><td>{_e(d.audit)}</td><td>{_e(d.dataset)}</td>"
        f'<td>{_e(d.metric)}</td><td class="num">{_e(fmt(d.base))}</td>'
        f'<td class="num">{_e(fmt(d.new))}</td></tr>'
        for d in shown
    )
    gate = " A regression fails the gate." if comparison.gate else ""
    return (
        f'<h2>Against the baseline</h2><div class="note">baseline {_e(comparison.base)}; '
        f"tolerance max(|base| x {fmt(comparison.rel_tol)}, {fmt(comparison.abs_tol)}); "
        f"{_e(counts)}.{gate}</div>"
        + (
            f"<table><tr><th>change</th><th>audit</th><th>set</th><th>metric</th><th>base</th>"
            f"<th>new</th></tr>{body}</table>"
            if body
            else ""
        )
    )


def _embedded(report: Report) -> str:
    from innaudit.render.json import render as render_json

    data = render_json(report).replace("<", "\\u003c")
    return f'<script type="application/json" id="innaudit-report">\n{data}</script>'


def render(report: Report) -> str:
    """The report as one self-contained HTML page."""

    report = canonical(report)
    title = f"innaudit {report.status.value.upper()}: {report.target.model or '?'}"
    body = "".join(
        [_header(report), _notices(report), _diagnosis(report), _summary(report), _comparison(report), *_audits(report)]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body><main>"
        f"<h1>innaudit stability report</h1>{body}"
        f"<footer>Numerical invertibility audit (Behrmann et al., AISTATS 2021). "
        f"The JSON report is embedded in this page (script id innaudit-report).</footer>"
        f"</main>\n{_embedded(report)}\n</body></html>\n"
    )
