"""Everything an audit does runs inside the runner's error boundary: a crash in an audit's
preparation (``skip_reason``) or a ``SystemExit`` from a model is that audit's ``error``; the
other audits keep their results and the report is written."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

import innaudit
from tests.helpers import invoke_cli, read_report

from ..api_models import ScaledChain

MODELS = Path(__file__).resolve().parent.parent / "api_models.py"


def test_a_bounds_hook_that_raises_is_that_audits_error(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = invoke_cli(
        "run",
        f"{MODELS}:broken_bounds",
        "--data",
        "uniform",
        "--ood",
        "gaussian",
        "--audit",
        "roundtrip",
        "--audit",
        "bounds",
        "--samples",
        "50",
        "-o",
        f"json={out}",
    )
    assert result.code == 2, result.stderr
    audits = {a["id"]: a for a in read_report(out)["audits"]}
    assert audits["roundtrip"]["status"] == "pass"
    assert audits["bounds"]["status"] == "error"
    assert "RuntimeError: bounds hook exploded" in audits["bounds"]["message"]


class _Exits(ScaledChain):
    def __init__(self, code: int) -> None:
        super().__init__(torch.ones(4), torch.ones(4))
        self.code = code

    def inverse(self, z: Tensor) -> Tensor:
        raise SystemExit(self.code)


def test_system_exit_in_a_model_is_an_error_never_a_pass() -> None:
    for code in (0, 1):
        report = innaudit.audit(_Exits(code), data=torch.rand(10, 4), ood=[], audits=["roundtrip", "sampling"])
        assert report.exit_code is innaudit.ExitCode.NO_VERDICT
        assert {a.status for a in report.audits} == {innaudit.Status.ERROR}
        assert all(f"SystemExit: {code}" in a.message for a in report.audits)
