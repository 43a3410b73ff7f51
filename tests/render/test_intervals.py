"""Rates carry 95 % Clopper-Pearson intervals: known answers, the runner, JSON and every renderer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

import innaudit
from innaudit.core.intervals import clopper_pearson, rate_intervals
from innaudit.core.metrics import neither, rate, worse
from innaudit.core.results import Report
from innaudit.render import RENDERERS, console
from innaudit.render.common import interval_text
from innaudit.verdict.report_json import report_from_dict, report_to_dict

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures_models.py"

SCHEMA = json.loads((Path(innaudit.__file__).parent / "render" / "report.schema.json").read_text())


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 1000, 0.0, 1 - 0.025 ** (1 / 1000)),  # closed form at k = 0
        (1000, 1000, 0.025 ** (1 / 1000), 1.0),  # and at k = n
        (5, 100, 0.0164318791820522, 0.1128349111054628),  # Beta quantiles (scipy.stats.beta.ppf)
        (3, 10000, 6.187148574838713e-05, 8.764745225140007e-04),
        (1, 1, 0.025, 1.0),
    ],
)
def test_clopper_pearson_known_answers(k: int, n: int, low: float, high: float) -> None:
    got = clopper_pearson(k, n)
    assert got[0] == pytest.approx(low, rel=1e-9, abs=1e-12)
    assert got[1] == pytest.approx(high, rel=1e-9)


def test_interval_contains_the_point_and_shrinks_with_n() -> None:
    widths = []
    for n in (10, 100, 1000, 10000):
        low, high = clopper_pearson(n // 10, n)
        assert low < 0.1 < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)


def test_rate_intervals_follow_the_declarations() -> None:
    metrics = {
        "n": 1000,
        "nonfinite_fraction": 0.0,
        "float64": {"nonfinite_fraction": 0.5},
        "error_l2": {"max": 0.5},
        "epsilon": 0.5,
    }
    declared = (
        neither("n"),
        rate("nonfinite_fraction"),
        rate("float64.nonfinite_fraction"),
        worse("error_l2"),
        neither("epsilon"),
        rate("absent_fraction"),
    )
    got = rate_intervals(metrics, declared)
    assert set(got) == {"nonfinite_fraction", "float64.nonfinite_fraction"}
    assert got["nonfinite_fraction"][0] == 0.0 and got["nonfinite_fraction"][1] == pytest.approx(0.00368, rel=1e-3)
    assert rate_intervals({"nonfinite_fraction": 0.0}, declared) == {}  # no n, no interval


@pytest.fixture(scope="module")
def report() -> Report:
    """A real run: the inverse is NaN on every even index, so half the round trips are non-finite."""
    return innaudit.audit(
        f"{FIXTURES}:nan_half",
        data="gaussian",
        ood=["uniform"],
        config={"audits": ["roundtrip"], "samples": 200, "batch_size": 50},
    )


def test_runner_attaches_intervals_to_every_declared_rate(report: Report) -> None:
    (audit,) = report.audits
    for result in audit.results:
        assert result.metrics["n"] == 200
        low, high = result.intervals["nonfinite_fraction"]
        assert result.metrics["nonfinite_fraction"] == 0.5
        assert low < 0.5 < high and high - low < 0.15
        assert set(result.intervals) >= {"nonfinite_fraction", "nan_fraction", "inf_fraction"}
        assert "error_l2" not in result.intervals


def test_intervals_in_json_round_trip_and_schema(report: Report) -> None:
    data = report_to_dict(report)
    jsonschema.validate(data, SCHEMA)
    first = data["audits"][0]["results"][0]
    assert first["intervals"]["nonfinite_fraction"] == list(report.audits[0].results[0].intervals["nonfinite_fraction"])
    assert report_to_dict(report_from_dict(data)) == data


def test_rate_text_wording(report: Report) -> None:
    result = report.audits[0].results[0]
    text = interval_text(result, "nonfinite_fraction", "roundtrip")
    assert text.startswith("100 of 200 round trips with a NaN or Inf (50.0 %, 95 % CI ")
    zero = type(result)(
        result.dataset,
        result.status,
        {"n": 1000, "nonfinite_fraction": 0.0},
        (),
        intervals={"nonfinite_fraction": clopper_pearson(0, 1000)},
    )
    assert interval_text(zero, "nonfinite_fraction") == "0 of 1,000 (< 0.37 %)"
    assert interval_text(zero, "missing_fraction") == ""
    assert not math.isnan(zero.intervals["nonfinite_fraction"][1])


@pytest.mark.parametrize("fmt", ["console", "html", "markdown", "junit", "json"])
def test_every_renderer_shows_the_interval(report: Report, fmt: str) -> None:
    text = console.render(report) if fmt == "console" else RENDERERS[fmt](report)
    low, high = report.audits[0].results[0].intervals["nonfinite_fraction"]
    if fmt == "json":
        assert '"intervals"' in text
    elif fmt == "console":  # the finding line: share, interval, count
        assert f"50.0 % [95 % {100 * low:.1f} %, {100 * high:.1f} %] of 200" in text
    else:
        assert "100 of 200" in text and "95 % CI" in text
