"""JUnit XML for CI test-report viewers (Jenkins, GitLab, GitHub test reporters).

One ``<testsuite>`` per audited model (named after it), one ``<testcase>`` per audit x set
(``classname`` the audit id, ``name`` the set). FAIL becomes ``<failure>``, ERROR ``<error>``,
SKIP ``<skipped>``; a WARN passes, with the warning in ``<system-out>``; a waived failure passes,
with the waiver there too. Every scalar metric and its thresholds are ``<property>`` elements of
the suite, named ``AUDIT[SET].METRIC`` (junit-10 allows properties on suites, not on testcases).
An audit a ``--budget`` cut says so in each of its testcases (``system-out`` of a pass) and in a
suite property ``AUDIT.budget_cut``.
A baseline comparison adds a ``baseline`` testsuite, one testcase per regressed metric.
The output targets the Jenkins xUnit ``junit-10.xsd`` that pytest's own output is checked
against (``tests/render/junit-10.xsd`` holds a copy of its structure).
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from innaudit.core.results import Report, Status, leaves
from innaudit.render.common import Row, cut_text, fmt, interval_text, rows
from innaudit.verdict.diagnosis import budget_cut
from innaudit.verdict.report_json import canonical

__all__ = ["render"]


def _clean(text: object) -> str:
    """Drop characters XML 1.0 cannot hold (control characters from a hostile checkpoint)."""
    return "".join(ch for ch in str(text) if ch in "\t\n\r" or (ord(ch) >= 0x20 and ch not in "\ufffe\uffff"))


def _testcase(suite: ET.Element, row: Row, cut: str = "") -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        classname=_clean(row.audit.id),
        name=_clean(row.dataset or row.audit.id),
        time=f"{row.audit.duration_s / max(1, len(row.audit.results)):.3f}",
    )
    text = _clean("; ".join(t for t in (row.text, cut_text(cut) if cut else "") if t))
    status = row.status
    if status is Status.FAIL:
        ET.SubElement(case, "failure", type="threshold", message=text).text = text
    elif status is Status.ERROR:
        ET.SubElement(case, "error", type="error", message=text).text = _clean(row.audit.error or text)
    elif status is Status.SKIP:
        ET.SubElement(case, "skipped", message=text)
    elif text:
        ET.SubElement(case, "system-out").text = f"{status.value}: {text}"


def _suite(parent: ET.Element, name: str, cases: list[Row], report: Report) -> ET.Element:
    count = {s: sum(1 for r in cases if r.status is s) for s in Status}
    suite = ET.SubElement(
        parent,
        "testsuite",
        name=_clean(name),
        tests=str(len(cases)),
        failures=str(count[Status.FAIL]),
        errors=str(count[Status.ERROR]),
        skipped=str(count[Status.SKIP]),
        time=f"{float(report.run.duration_s or 0):.3f}",
        timestamp=_clean(report.run.started_at or ""),
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("sha256", report.target.sha256 or ""),
        ("loader", report.target.loader or ""),
        ("seed", "" if report.run.seed is None else report.run.seed),
        ("verdict", report.status.value),
        ("exit_code", int(report.exit_code)),
    ):
        ET.SubElement(props, "property", name=key, value=_clean(value))
    for row in cases:  # junit-10 has no per-testcase properties: they live on the suite
        if row.result is None:
            continue
        where = f"{row.audit.id}[{row.dataset}]"
        for path, value in leaves(row.result.metrics):
            ET.SubElement(props, "property", name=_clean(f"{where}.{path}"), value=_clean(fmt(value, 6)))
            if path in row.result.intervals:
                ET.SubElement(
                    props,
                    "property",
                    name=_clean(f"{where}.{path}.ci95"),
                    value=_clean(interval_text(row.result, path)),
                )
        for c in row.result.checks:
            for level in ("warn", "fail"):
                bound = getattr(c, level)
                if bound is not None:
                    ET.SubElement(
                        props, "property", name=_clean(f"{where}.{c.metric}.{level}_threshold"), value=fmt(bound, 6)
                    )
    cuts = budget_cut(report)
    for audit_id, cut in cuts.items():
        ET.SubElement(props, "property", name=_clean(f"{audit_id}.budget_cut"), value=_clean(cut))
    for row in cases:
        _testcase(suite, row, cuts.get(row.audit.id, ""))
    return suite


def _baseline(parent: ET.Element, report: Report) -> None:
    comparison = report.comparison
    if comparison is None:
        return
    regressed = comparison.regressions
    suite = ET.SubElement(
        parent,
        "testsuite",
        name=_clean(f"baseline {comparison.base}"),
        tests=str(max(1, len(regressed))),
        failures=str(len(regressed) if comparison.gate else 0),
        errors="0",
    )
    if not regressed:
        ET.SubElement(suite, "testcase", classname="baseline", name="no regression")
    for d in regressed:
        case = ET.SubElement(
            suite, "testcase", classname=_clean(f"baseline.{d.audit}"), name=_clean(f"{d.dataset} {d.metric}")
        )
        text = f"{d.metric} regressed: {fmt(d.base)} -> {fmt(d.new)}"
        if comparison.gate:
            ET.SubElement(case, "failure", type="regression", message=_clean(text)).text = _clean(text)
        else:
            ET.SubElement(case, "system-out").text = _clean(text)


def render(report: Report) -> str:
    """The report as JUnit XML text (UTF-8, with an XML declaration)."""

    report = canonical(report)
    cases = rows(report)
    root = ET.Element(
        "testsuites",
        name="innaudit",
        tests=str(len(cases)),
        failures=str(sum(r.status is Status.FAIL for r in cases)),
        errors=str(sum(r.status is Status.ERROR for r in cases) + len(report.errors)),
    )
    suite = _suite(root, str(report.target.model or "model"), cases, report)
    for error in report.errors:  # a run-level error (nothing audited...) is an error too
        case = ET.SubElement(suite, "testcase", classname="innaudit", name="run")
        ET.SubElement(case, "error", type="error", message=_clean(error)).text = _clean(error)
    if report.errors:
        suite.set("tests", str(len(cases) + len(report.errors)))
        suite.set("errors", str(int(suite.get("errors", "0")) + len(report.errors)))
    _baseline(root, report)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
