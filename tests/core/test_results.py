"""The verdict and the exit code are computed once, from the results."""

from __future__ import annotations

import math

import pytest

from innaudit.config.settings import Threshold
from innaudit.core.results import AuditResult, ExitCode, Report, Status, lookup
from innaudit.verdict.gate import judge


def _report(*statuses: Status, errors: tuple[str, ...] = (), fail_on: Status = Status.FAIL) -> Report:
    audits = tuple(AuditResult(f"a{i}", "t", s, "", 0.0, 0) for i, s in enumerate(statuses))
    return Report({"name": "innaudit", "version": "0"}, {}, {"model": "m"}, audits, errors, fail_on)


@pytest.mark.parametrize(
    ("statuses", "status", "code"),
    [
        ((Status.PASS, Status.PASS), Status.PASS, ExitCode.OK),
        ((Status.PASS, Status.SKIP), Status.PASS, ExitCode.OK),
        ((Status.PASS, Status.WARN), Status.WARN, ExitCode.OK),
        ((Status.WARN, Status.FAIL), Status.FAIL, ExitCode.GATE_FAILED),
        ((Status.FAIL, Status.ERROR), Status.ERROR, ExitCode.NO_VERDICT),
        ((Status.ERROR, Status.PASS), Status.ERROR, ExitCode.NO_VERDICT),
    ],
)
def test_exit_code_two_outranks_one(statuses: tuple[Status, ...], status: Status, code: ExitCode) -> None:
    report = _report(*statuses)
    assert report.status is status
    assert report.exit_code is code


def test_fail_on_warn_turns_warnings_into_gate_failures() -> None:
    assert _report(Status.WARN, fail_on=Status.WARN).exit_code is ExitCode.GATE_FAILED
    assert _report(Status.PASS, fail_on=Status.WARN).exit_code is ExitCode.OK


def test_run_level_errors_give_no_verdict() -> None:
    assert _report(Status.PASS, errors=("nothing audited",)).exit_code is ExitCode.NO_VERDICT


def test_counts_cover_every_status() -> None:
    assert _report(Status.PASS, Status.FAIL, Status.FAIL).counts == {
        "pass": 1,
        "skip": 0,
        "warn": 0,
        "fail": 2,
        "error": 0,
    }


def test_judge_levels_and_nan() -> None:
    thresholds = {"a.max": Threshold(warn=1.0, fail=2.0), "b": Threshold(fail=0.0), "absent": Threshold(fail=0)}
    status, checks = judge({"a": {"max": 1.5}, "b": 0.0}, thresholds)
    assert status is Status.WARN and [c.status for c in checks] == [Status.WARN, Status.PASS]
    status, _ = judge({"a": {"max": 2.5}, "b": 0.0}, thresholds)
    assert status is Status.FAIL
    status, checks = judge({"a": {"max": math.nan}, "b": 0.0}, thresholds)
    assert status is Status.FAIL and checks[0].status is Status.FAIL
    status, _ = judge({"a": {"max": 0.5}, "b": 1e-9}, thresholds)
    assert status is Status.FAIL  # any non-finite share above 0 fails


def test_lookup_walks_dotted_paths() -> None:
    assert lookup({"x": {"y": {"z": 3}}}, "x.y.z") == 3
    assert lookup({"x": 1}, "x.y") is None
