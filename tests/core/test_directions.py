"""Directions are data: the baseline gate and the threshold gate read each metric's declared
direction, so a collapsing smallest singular value is a regression, never an improvement."""

from __future__ import annotations

from pathlib import Path

import pytest

from innaudit.audits import metric_table
from innaudit.config.settings import Threshold
from innaudit.core.metrics import Direction, better, declared, worse
from innaudit.core.results import AuditResult, Report, SetResult, Status
from innaudit.render.json import render
from innaudit.verdict.gate import judge
from tests.helpers import invoke_cli


def _spectrum_report(sv_min: float, condition: float) -> Report:
    metrics = {"n": 8, "forward": {"sv_min": {"min": sv_min, "median": sv_min * 10}}, "condition": {"max": condition}}
    result = SetResult("digits:test", Status.PASS, metrics)
    audit = AuditResult("spectrum", "Spectrum", Status.PASS, "ok", 1.0, 0, (result,))
    return Report(
        tool={"name": "innaudit", "version": "0"},
        run={"seed": 0, "config": {}},
        target={"model": "m.pt"},
        audits=(audit,),
    )


@pytest.fixture
def reports(tmp_path: Path) -> tuple[Path, Path]:
    healthy, collapsed = tmp_path / "healthy.json", tmp_path / "collapsed.json"
    healthy.write_text(render(_spectrum_report(1e-1, 30.0)))
    collapsed.write_text(render(_spectrum_report(1e-5, 30.0)))
    return healthy, collapsed


def test_a_collapsing_sv_min_is_a_regression(reports: tuple[Path, Path]) -> None:
    healthy, collapsed = reports
    result = invoke_cli("compare", healthy, collapsed, "--fail-on-regression")
    assert result.code == 1, result.stdout + result.stderr
    regressed = [line for line in result.stdout.splitlines() if "forward.sv_min" in line]
    assert regressed and all("regressed" in line for line in regressed), result.stdout
    assert "condition" not in " ".join(regressed)


def test_a_recovering_sv_min_is_an_improvement(reports: tuple[Path, Path]) -> None:
    healthy, collapsed = reports
    result = invoke_cli("compare", collapsed, healthy, "--fail-on-regression")
    assert result.code == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "forward.sv_min" in line]
    assert lines and all("improved" in line for line in lines), result.stdout


def test_every_declared_sv_min_is_higher_better_and_errors_higher_worse() -> None:
    table = metric_table()
    assert declared(table, "spectrum", "forward.sv_min.min").direction is Direction.HIGHER_BETTER
    assert declared(table, "layers", "scale_min").direction is Direction.HIGHER_BETTER
    assert declared(table, "roundtrip", "rel_error_l2.max").direction is Direction.HIGHER_WORSE
    assert declared(table, "roundtrip", "nonfinite_fraction").rate
    assert declared(table, "roundtrip", "rel_error_l2.maxx") is None


def test_a_higher_better_threshold_fails_below_its_limit() -> None:
    declarations = {"sv_min": better("sv_min"), "err": worse("err")}
    thresholds = {"sv_min.min": Threshold(warn=1e-3, fail=1e-6), "err.max": Threshold(warn=1e-4, fail=1e-2)}
    status, checks = judge({"sv_min": {"min": 1e-7}, "err": {"max": 1e-7}}, thresholds, declarations)
    assert status is Status.FAIL and [c.status for c in checks] == [Status.FAIL, Status.PASS]
    assert checks[0].text() == "sv_min.min=1e-07 < 1e-06"
    status, checks = judge({"sv_min": {"min": 1e-4}, "err": {"max": 1e-3}}, thresholds, declarations)
    assert status is Status.WARN and [c.status for c in checks] == [Status.WARN, Status.WARN]
    status, _ = judge({"sv_min": {"min": 0.5}, "err": {"max": 0.0}}, thresholds, declarations)
    assert status is Status.PASS


def test_config_orders_warn_and_fail_by_direction(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("layers:\n  thresholds:\n    scale_min: {warn: 1.0e-6, fail: 1.0e-3}\n")
    result = invoke_cli("run", "checkpoints/digits-additive.pt", "--config", config, "--audit", "layers")
    assert result.code == 2 and "expected warn >= fail" in result.stderr
