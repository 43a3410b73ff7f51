"""Every renderer over reports with passes, failures, NaN metrics and crashed audits."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources

import jsonschema
import pytest

from innaudit.api import audit
from innaudit.audits import REGISTRY
from innaudit.core.results import Report
from innaudit.render import RENDERERS, console, plots
from innaudit.render.json import render as render_json

from ..audits.known_models import scaling_model, underflow_model

SMALL = {
    "samples": 200,
    "attack": {"samples": 4, "steps": 10},
    "spectrum": {"samples": 8},
    "bounds": {"samples": 8},
    "layers": {"samples": 16},
    "logdet": {"samples": 16},
}
"""Every audit runs, on budgets that keep the fixtures to seconds."""

SCHEMA = json.loads(resources.files("innaudit.render").joinpath("report.schema.json").read_text())


def _strict(text: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def failing_report() -> Report:
    return audit(underflow_model(), data="constant:0.1", ood=["far=constant:0.9", "uniform"], config=SMALL)


@pytest.fixture(scope="module")
def passing_report() -> Report:
    return audit(scaling_model([0.5, 2.0]), data="uniform", config=SMALL)


def test_json_is_strict_and_schema_valid(failing_report: Report, passing_report: Report) -> None:
    for report in (failing_report, passing_report):
        data = _strict(render_json(report))
        jsonschema.validate(data, SCHEMA)
        assert data["summary"]["exit_code"] == int(report.exit_code)
        assert data["summary"]["status"] == report.status.value


def test_non_finite_values_are_strings(failing_report: Report) -> None:
    data = _strict(render_json(failing_report))
    far = next(r for a in data["audits"] if a["id"] == "roundtrip" for r in a["results"] if r["dataset"] == "far")
    assert far["metrics"]["nonfinite_fraction"] == 1.0
    assert far["metrics"]["error_l2"]["max"] == "nan"  # no finite sample to summarize
    assert far["status"] == "fail"


def test_json_names_the_roundtrip_metrics(passing_report: Report) -> None:
    data = _strict(render_json(passing_report))
    metrics = data["audits"][0]["results"][0]["metrics"]
    assert {"nonfinite_fraction", "error_l2", "n"} <= set(metrics)
    assert set(metrics["error_l2"]) == {"median", "p99", "max", "mean"}


def test_schema_rejects_what_it_should(passing_report: Report) -> None:
    data = _strict(render_json(passing_report))
    data["summary"]["exit_code"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def _tagged(report: Report) -> Report:
    """The report with each audit's id made unique (``x7roundtrip``...) and no config block, so
    an id can only reach the output through that audit's own result (the config and the
    diagnosis name audits by their real ids)."""
    audits = tuple(replace(a, id=f"x7{a.id}") for a in report.audits)
    return replace(report, audits=audits, run={k: v for k, v in report.run.items() if k != "config"})


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_every_renderer_names_every_audit_and_the_verdict(
    fmt: str, failing_report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [a.id for a in failing_report.audits] == list(REGISTRY)
    report = _tagged(failing_report)
    text = RENDERERS[fmt](report)
    # the reports with one audit left out are checked without the HTML's figures (a second each);
    # the full render above drew them, so a name that only a figure carries is still counted
    monkeypatch.setattr(plots, "plot_series", lambda kind, series, title, salt: "")
    for result in report.audits:
        assert result.id in text, f"{fmt} does not name {result.id}"
        rest = replace(report, audits=tuple(a for a in report.audits if a is not result))
        assert result.id not in RENDERERS[fmt](rest), f"{fmt} names {result.id} without its result"
    assert "fail" in text.lower()


def test_console_plain_has_no_escape_codes_and_color_has(failing_report: Report) -> None:
    plain = console.render(failing_report, color=False, width=250)
    assert "\x1b[" not in plain
    assert "innaudit: FAIL (exit 1)" in plain
    assert "round trips with a NaN or Inf (limit 0 %)" in plain
    assert "[nonfinite_fraction]" not in plain
    assert "[nonfinite_fraction]" in console.render(failing_report, width=250, verbose=True)
    assert "\x1b[" in console.render(failing_report, color=True)


def test_a_check_is_worded_for_its_audit() -> None:
    """The same metric leaf reads as what that audit measured: a round trip's error or a gradient's."""
    from innaudit.core.results import Check, Status
    from innaudit.render.common import check_text

    check = Check("rel_error_l2.max", 0.034, 1e-3, 1e-2, Status.FAIL)
    assert check_text("gradient", check, {}).startswith("max relative gradient error 0.034 (limit 0.01)")
    assert check_text("roundtrip", check, {}).startswith("max relative round-trip error 0.034")
