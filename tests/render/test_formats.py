"""HTML, JUnit, Markdown and GitHub renderers, and the JSON round trip they all rely on."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from innaudit.core.results import AuditResult, Report, SetResult, Status
from innaudit.render import RENDERERS, github, html, junit, markdown
from innaudit.render.json import render as render_json
from innaudit.render.json import report_dict
from innaudit.verdict.report_json import report_from_dict, report_to_dict

from .fabricated import NASTY, fabricated_report, with_baseline

XSD = Path(__file__).with_name("junit-10.xsd")


@pytest.fixture(scope="module")
def report() -> Report:
    return with_baseline(fabricated_report())


@pytest.fixture(scope="module")
def page(report: Report) -> str:
    return html.render(report)


def _embedded(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="innaudit-report">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


# -- round trip --------------------------------------------------------------------------------
def test_from_dict_inverts_to_dict(report: Report) -> None:
    data = report_to_dict(report)
    back = report_from_dict(json.loads(json.dumps(data)))
    assert report_to_dict(back) == data
    assert math.isnan(back.audits[0].results[0].metrics["error_l2"]["max"])
    assert back.audits[0].results[0].metrics["error_l2"]["p99"] == math.inf
    assert back.audits[0].status is Status.FAIL
    assert back.comparison is not None and back.comparison.gate_failed
    assert back.exit_code == report.exit_code


@pytest.mark.parametrize("fmt", sorted(set(RENDERERS) - {"console"}))
def test_every_format_renders_the_same_from_the_saved_json(fmt: str, report: Report, page: str) -> None:
    saved = report_from_dict(json.loads(render_json(report)))
    assert RENDERERS[fmt](saved) == (page if fmt == "html" else RENDERERS[fmt](report))


def test_another_schema_version_is_refused(report: Report) -> None:
    from innaudit.core.errors import UsageError

    data = report_to_dict(report)
    data["schema_version"] = 99
    with pytest.raises(UsageError, match="schema_version 99"):
        report_from_dict(data)


# -- HTML -------------------------------------------------------------------------------------
def test_html_is_self_contained_and_escaped(report: Report, page: str) -> None:
    assert "<script>alert" not in page  # the hostile name is escaped everywhere
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from outside
    assert re.findall(r"<script\b[^>]*>", page) == ['<script type="application/json" id="innaudit-report">']
    assert "default-src 'none'" in page
    assert _embedded(page) == report_dict(report)  # the page turns back into data (with the diagnosis)


def test_html_draws_every_series_kind(page: str) -> None:
    assert page.count("<svg ") == 6  # histogram, values, curve, blocks, grid, images
    assert "unavailable" not in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "ids repeat between inline SVGs"
    for text in ("NaN/Inf", "forward.sv_min", "lipschitz_inverse", "reconstruction", "coupling.1"):
        assert text in page
    assert "<td>EXPIRED</td>" in page and "FAIL waived until 2020-01-01: tracked in #1" in page
    assert "<td>WAIVED</td>" in page and "FAIL waived until 2999-01-01: known &lt;b&gt;issue&lt;/b&gt;" in page
    assert "Against the baseline" in page and "regressed" in page


def test_html_is_byte_identical_between_renders(report: Report, page: str) -> None:
    assert html.render(report) == page


def test_html_survives_a_malformed_series(report: Report) -> None:
    bad = SetResult(
        "odd",
        Status.PASS,
        {},
        series={"grid": {"x": [1], "y": [1], "m": "not a grid"}, "curve": ["not", "a", "mapping"]},
    )
    odd = replace(report, audits=(AuditResult("roundtrip", "t", Status.PASS, "", 0.0, 0, (bad,)),))
    page = html.render(odd)
    assert "plot of curve unavailable" in page
    assert "plot of grid unavailable" in page, "the malformed grid was drawn or dropped without a word"
    assert page.count("unavailable") == 2 and " odd</h3>" in page and page.rstrip().endswith("</html>")


# -- JUnit ------------------------------------------------------------------------------------
def test_junit_validates_against_the_junit_10_schema(report: Report) -> None:
    import xmlschema

    schema = xmlschema.XMLSchema(str(XSD))
    for candidate in (report, fabricated_report(nasty=False), replace(report, errors=("nothing audited",))):
        schema.validate(junit.render(candidate))


def test_junit_maps_statuses_and_metrics(report: Report) -> None:
    from xml.etree import ElementTree as ET

    root = ET.fromstring(junit.render(report))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == NASTY
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert cases[("roundtrip", NASTY)].find("failure") is not None
    assert cases[("spectrum", "spectrum")].find("error") is not None
    assert cases[("attack", "attack")].find("skipped") is not None
    assert cases[("roundtrip", "waived")].find("failure") is None  # a waiver passes the case
    assert cases[("roundtrip", "witness")].find("failure") is not None  # an expired one does not
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["roundtrip[spectrum].nonfinite_fraction"] == "0"
    assert props["roundtrip[spectrum].error_l2.max"] == "nan"
    assert props["roundtrip[spectrum].nonfinite_fraction.fail_threshold"] == "0"
    assert suite.get("failures") == "2" and suite.get("errors") == "1" and suite.get("skipped") == "1"
    assert len(root.findall("testsuite")) == 2  # the model, and the baseline regressions


# -- Markdown ---------------------------------------------------------------------------------
def test_markdown_is_worst_first_and_escaped(report: Report) -> None:
    text = markdown.render(report)
    assert text.startswith("### 💥 innaudit: ERROR (exit 2)")
    assert "<script>" not in text and "&lt;script&gt;" in text
    status_rows = [line for line in text.splitlines() if line.startswith("| ") and "|---" not in line][1:]
    tags = [row.split("|")[1].strip().split(" ")[-1] for row in status_rows]
    order = [t for t in tags if t in ("PASS", "WARN", "FAIL", "ERROR")]  # WAIVED/EXPIRED/SKIP rows aside
    ranks = [["PASS", "WARN", "FAIL", "ERROR"].index(s) for s in order]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] == 3
    assert "Against the baseline" in text and "| regressed |" in text
    assert all(line.count("|") - line.count("\\|") in (0, 5, 7) for line in text.splitlines())


def test_markdown_of_a_huge_report_stays_under_one_mebibyte() -> None:
    long = "x" * 5000
    sets = tuple(
        SetResult(f"set{i}-{long}", Status.FAIL, {"nonfinite_fraction": 1.0}, message=long) for i in range(3000)
    )
    audits = tuple(AuditResult(f"audit{i}", "t", Status.FAIL, long, 0.0, 0, sets) for i in range(5))
    big = Report(
        tool={"name": "innaudit", "version": "0"},
        run={"seed": 0},
        target={"model": long},
        audits=audits,
        warnings=tuple(long for _ in range(1000)),
    )
    text = markdown.render(big)
    assert len(text.encode("utf-8")) < 1 << 20
    assert "more; see the HTML or JSON report" in text


# -- GitHub -----------------------------------------------------------------------------------
def test_github_annotations_are_escaped_and_worst_first(report: Report) -> None:
    lines = github.render(report).splitlines()
    assert all(line.startswith("::") for line in lines)
    kinds = [line.split(" ")[0] for line in lines]
    assert kinds[0] == "::error"
    first_warning = kinds.index("::warning")
    assert "::error" not in kinds[first_warning : first_warning + 1]
    hostile = next(line for line in lines if "alert" in line)
    title, _, message = hostile.partition("::")[2].partition("::")
    assert "%0A" in title or "%250A" in title
    assert ":" not in title.removeprefix("error title=") and "," not in title
    assert "message%0Aover 100%25 lines" in message  # LF and % escaped in the message
    assert "%250A" in title  # a literal "%0A" in a set name is escaped, not read as a newline
    assert any("regression" in line and line.startswith("::error") for line in lines)


def test_github_escapes_follow_the_workflow_command_rules() -> None:
    assert github.escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert github.escape_property("a:b,c%") == "a%3Ab%2Cc%25"
