"""Findings are worded once: the one list of ``render.common.findings`` is what the summary, the
console, Markdown, GitHub annotations and JUnit cases say, word for word."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

import innaudit
from innaudit.core.results import Report
from innaudit.render import RENDERERS
from innaudit.render.common import Finding, findings
from innaudit.render.github import escape_data
from innaudit.render.markdown import _md
from tests.render.fabricated import default_run_report, diagnosable_report, fabricated_report


def _set_findings(report: Report) -> list[Finding]:
    return [f for f in findings(report) if f.dataset]


REPORTS = {
    "diagnosable": diagnosable_report,
    "default-run": default_run_report,
    "fabricated": lambda: fabricated_report(nasty=False),
}


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_renderer_says_each_finding_in_the_same_words(name: str) -> None:
    report = innaudit.Report.of(REPORTS[name]())
    found = _set_findings(report)
    assert found, "the report must hold findings for the test to mean anything"
    summary = report.summary()
    console = RENDERERS["console"](report, width=4000)
    markdown = RENDERERS["markdown"](report)
    github = RENDERERS["github"](report)
    cases = {
        (c.get("classname"), c.get("name")): " ".join(e.text or e.get("message", "") for e in c)
        for c in ET.fromstring(RENDERERS["junit"](report)).iter("testcase")
    }
    for f in found:
        assert f"  {f.tag} {f.where} {f.text}" in summary.splitlines(), f
        assert f.text in console, f
        assert _md(f.text) in markdown, f
        assert escape_data(f.text) in github, f
        assert f.text in cases[(f.audit, f.dataset)], f


def test_a_waiver_reads_the_same_in_the_console_and_in_an_annotation() -> None:
    """The two wordings of a waiver ("EXPIRED waiver until ..." in annotations and JUnit,
    "FAIL waived until ..." in the console) are one now."""
    report = innaudit.Report.of(fabricated_report(nasty=False))
    waived = [f for f in findings(report) if f.label in ("WAIVED", "EXPIRED")]
    assert {f.label for f in waived} == {"WAIVED", "EXPIRED"}
    github = RENDERERS["github"](report)
    for f in waived:
        assert escape_data(f.text) in github
    assert "FAIL waiver expired on 2020-01-01: tracked in #1" in [f.text for f in waived]
