"""Baseline classification (known answers) and waivers (validation, expiry, exit codes)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace

import pytest

from innaudit.audits import metric_table, specs
from innaudit.config import waivers
from innaudit.config.settings import parse_config
from innaudit.core.errors import ConfigError
from innaudit.core.results import AuditResult, Change, ExitCode, Report, SetResult, Status
from innaudit.verdict.baseline import classify, compare
from innaudit.verdict.gate import apply_waivers


@pytest.mark.parametrize(
    ("base", "new", "higher_better", "expected"),
    [
        (1.0, 1.05, False, Change.UNCHANGED),  # within 10%
        (1.0, 1.2, False, Change.REGRESSED),
        (1.0, 0.8, False, Change.IMPROVED),
        (1.0, 0.8, True, Change.REGRESSED),  # e.g. a smallest singular value that shrank
        (0.0, 5e-7, False, Change.UNCHANGED),  # the absolute tolerance near zero
        (0.0, 0.001, False, Change.REGRESSED),
        (1e-6, math.nan, False, Change.REGRESSED),
        (math.nan, 1e-6, False, Change.IMPROVED),
        (math.nan, math.nan, False, Change.UNCHANGED),
        (math.inf, math.inf, False, Change.UNCHANGED),
        (1.0, math.inf, False, Change.REGRESSED),
        (math.inf, 1.0, False, Change.IMPROVED),
    ],
)
def test_classify_known_answers(base: float, new: float, higher_better: bool, expected: Change) -> None:
    assert classify(base, new, 0.1, 1e-6, higher_better) is expected


def _report(sets: dict[str, float], status: Status = Status.PASS) -> Report:
    results = tuple(
        SetResult(name, status, {"n": 10, "nonfinite_fraction": v, "error_l2": {"max": v}}) for name, v in sets.items()
    )
    return Report(
        tool={"name": "innaudit", "version": "0"},
        run={"seed": 0},
        target={"model": "m"},
        audits=(AuditResult("roundtrip", "t", status, "", 0.0, 0, results),),
    )


def test_compare_buckets_and_gate() -> None:
    base = _report({"a": 0.0, "b": 0.5, "gone": 0.1})
    new = _report({"a": 0.3, "b": 0.5, "fresh": 0.2})
    comparison = compare(base, new, metric_table(), gate=True)
    by_key = {(d.dataset, d.metric): d.change for d in comparison.deltas}
    assert by_key[("a", "nonfinite_fraction")] is Change.REGRESSED
    assert by_key[("b", "error_l2.max")] is Change.UNCHANGED
    assert by_key[("fresh", "nonfinite_fraction")] is Change.NEW
    assert by_key[("gone", "nonfinite_fraction")] is Change.MISSING
    assert ("a", "n") not in by_key  # a sample count is not a metric
    assert comparison.deltas[0].change is Change.REGRESSED  # worst first
    gated = replace(new, comparison=comparison)
    assert gated.status is Status.FAIL and gated.exit_code is ExitCode.GATE_FAILED
    shown = replace(new, comparison=compare(base, new, metric_table(), gate=False))
    assert shown.exit_code is ExitCode.OK


def test_compare_refuses_another_schema_version() -> None:
    from innaudit.core.errors import UsageError

    with pytest.raises(UsageError, match="schema_version"):
        compare(replace(_report({}), schema_version=0), _report({}), metric_table())


# -- waivers ----------------------------------------------------------------------------------
def _config(waiver_list: object) -> object:
    return parse_config({"waivers": waiver_list}, specs())


def test_waivers_are_validated() -> None:
    good = _config([{"audit": "roundtrip", "set": "uniform", "reason": "known", "expires": "2030-01-01"}])
    assert good.waivers[0].expires == dt.date(2030, 1, 1)
    assert good.to_dict()["waivers"][0]["expires"] == "2030-01-01"
    bad = [
        ([{"audit": "roundtrp", "reason": "r", "expires": "2030-01-01"}], "did you mean 'roundtrip'"),
        ([{"audit": "roundtrip", "expires": "2030-01-01"}], "no reason"),
        ([{"audit": "roundtrip", "reason": "r", "expires": "soon"}], "expected a date"),
        ([{"audit": "roundtrip", "reason": "r", "expires": "2030-01-01", "until": 1}], "not a waiver key"),
        ({"audit": "roundtrip"}, "expected a list"),
    ]
    for raw, message in bad:
        with pytest.raises(ConfigError, match=message):
            _config(raw)


def test_a_waiver_turns_a_failure_into_a_documented_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waivers, "clock", lambda: dt.date(2025, 6, 1))
    failing = _report({"uniform": 0.3, "gaussian": 0.0})
    failing = replace(
        failing,
        audits=(
            replace(
                failing.audits[0],
                status=Status.FAIL,
                results=(replace(failing.audits[0].results[0], status=Status.FAIL), failing.audits[0].results[1]),
            ),
        ),
    )
    assert failing.exit_code is ExitCode.GATE_FAILED
    config = _config(
        [
            {"audit": "roundtrip", "set": "uniform", "reason": "tracked in #7", "expires": "2025-12-31"},
            {"audit": "roundtrip", "set": "rademacher", "reason": "old", "expires": "2026-01-01"},
        ]
    )
    waived = apply_waivers(failing, config.waivers)
    uniform = waived.audits[0].results[0]
    assert uniform.status is Status.PASS and uniform.waiver["waived_status"] == "fail"
    assert uniform.waiver["reason"] == "tracked in #7" and not uniform.waiver["expired"]
    assert waived.exit_code is ExitCode.OK and waived.audits[0].status is Status.PASS
    assert any("rademacher matched no failing" in w for w in waived.warnings)


def test_an_expired_waiver_stops_waiving_and_says_so() -> None:
    failing = _report({"uniform": 0.3}, Status.FAIL)
    failing = replace(
        failing,
        audits=(replace(failing.audits[0], results=(replace(failing.audits[0].results[0], status=Status.FAIL),)),),
    )
    config = _config([{"audit": "roundtrip", "reason": "until the fix", "expires": "2025-01-31"}])
    expired = apply_waivers(failing, config.waivers, today=dt.date(2025, 1, 31))
    assert expired.exit_code is ExitCode.GATE_FAILED
    assert expired.audits[0].results[0].waiver["expired"] is True
    assert any("expired on 2025-01-31" in w for w in expired.warnings)
    active = apply_waivers(failing, config.waivers, today=dt.date(2025, 1, 30))
    assert active.exit_code is ExitCode.OK


def test_an_error_is_never_waived() -> None:
    crashed = replace(
        _report({"uniform": 0.3}),
        audits=(
            AuditResult("roundtrip", "t", Status.ERROR, "crash", 0.0, 0, (SetResult("uniform", Status.ERROR, {}),)),
        ),
    )
    config = _config([{"audit": "roundtrip", "reason": "r", "expires": "2999-01-01"}])
    out = apply_waivers(crashed, config.waivers, today=dt.date(2025, 1, 1))
    assert out.exit_code is ExitCode.NO_VERDICT and out.audits[0].results[0].waiver is None
