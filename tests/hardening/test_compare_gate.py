"""``compare BASE NEW --fail-on-regression`` never passes a broken NEW (issue 28, item 3).

A NEW report whose run has no trustworthy verdict (an audit crashed, nothing was audited)
exits 2 whatever its metrics say; under the gate, a metric of BASE that NEW no longer has (its
audit errored, was skipped or left out) fails like a regression (exit 1). ``run --baseline``
shares the rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import CliResult, read_report

HOSTILE = Path(__file__).resolve().parent / "hostile_models.py"
FAST = ("--samples", "16")


@pytest.fixture()
def base(run_cli: Callable[..., CliResult], model: Path, tmp_path: Path) -> Path:
    path = tmp_path / "base.json"
    result = run_cli("run", model, "--audit", "roundtrip", "--audit", "logdet", *FAST, "-o", f"json={path}")
    assert result.code == 0, result.stderr
    return path


def test_a_new_report_whose_audit_crashed_exits_2(
    run_cli: Callable[..., CliResult], base: Path, tmp_path: Path
) -> None:
    new = tmp_path / "new.json"
    assert run_cli("run", f"{HOSTILE}:exit1", "--audit", "roundtrip", *FAST, "-o", f"json={new}").code == 2
    for gate in ((), ("--fail-on-regression",)):
        result = run_cli("compare", base, new, *gate)
        assert result.code == 2, result.stderr
        assert "no trustworthy verdict" in result.stderr_lines[-1]


def test_a_gated_metric_that_vanished_fails_the_gate(
    run_cli: Callable[..., CliResult], base: Path, tmp_path: Path
) -> None:
    new = tmp_path / "new.json"
    model = tmp_path / "model.pt"
    assert run_cli("run", model, "--audit", "logdet", *FAST, "-o", f"json={new}").code == 0  # roundtrip left out
    ungated = run_cli("compare", base, new)
    assert ungated.code == 0 and "missing" in ungated.stderr
    gated = run_cli("compare", base, new, "--fail-on-regression", "-o", "github")
    assert gated.code == 1, gated.stderr
    assert "::error title=innaudit missing roundtrip" in gated.stdout


def test_a_new_report_without_audits_fails_the_gate(
    run_cli: Callable[..., CliResult], base: Path, tmp_path: Path
) -> None:
    data = read_report(base)
    data["audits"], data["errors"] = [], []
    new = tmp_path / "empty.json"
    new.write_text(json.dumps(data))
    assert run_cli("compare", base, new, "--fail-on-regression").code == 1


def test_run_baseline_gates_on_vanished_metrics_too(
    run_cli: Callable[..., CliResult], base: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.pt"
    out = tmp_path / "out.json"
    result = run_cli(
        "run", model, "--audit", "logdet", *FAST, "--baseline", base, "--fail-on-regression", "-o", f"json={out}"
    )
    assert result.code == 1, result.stderr
    summary = read_report(out)["summary"]
    assert summary["status"] == "fail" and summary["exit_code"] == 1
