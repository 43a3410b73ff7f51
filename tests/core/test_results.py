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


def test_percent_is_the_one_way_a_share_is_written() -> None:
    """One decimal from 1 %, two significant digits below, never 0.0 % for a non-zero share nor
    100.0 % below 1; a limit exactly as given; a change with its sign."""
    from innaudit.core.metrics import percent

    assert [percent(v) for v in (0.0, 0.676, 0.05, 0.0037, 1.2e-5, 0.9995, 1.0)] == [
        "0.0 %",
        "67.6 %",
        "5.0 %",
        "0.37 %",
        "0.0012 %",
        ">99.9 %",
        "100.0 %",
    ]
    assert percent(float("nan")) == "nan"
    assert percent(0.005, exact=True) == "0.5 %" and percent(0.0, exact=True) == "0 %"
    assert percent(2.5, signed=True) == "+250.0 %" and percent(-0.004, signed=True) == "-0.40 %"


def test_no_module_formats_a_percentage_of_its_own() -> None:
    """Every share is written by ``core.metrics.percent``: no ``:.0%`` format spec and no
    ``100 * x`` written with a ``%`` anywhere else in the package (the remedies' accuracy in points,
    with two decimals, is the one exception)."""
    import re
    from pathlib import Path

    import innaudit

    spec = re.compile(r"\{[^{}]*:[+ ]?[.0-9]*%\}|\{100 \* [^{}]*\} ?%|\{[^{}]*\* 100[^{}]*\} ?%")
    root = Path(innaudit.__file__).parent
    found = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        if path.relative_to(root).as_posix() not in ("core/metrics.py", "remedies/summary.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if spec.search(line)
    ]
    assert found == []
