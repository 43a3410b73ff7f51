"""The command line: exit-code matrix, help without torch, list / explain / init, outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, invoke_cli, invoke_subprocess

FACTORY = REPO / "tests" / "audits" / "cli_models.py"


def invoke(*args: str) -> tuple[int, str, str]:
    """Run ``main`` in-process; return (exit code, stdout, stderr)."""
    result = invoke_cli(*args)
    return result.code, result.stdout, result.stderr


def test_help_does_not_import_torch() -> None:
    """``--help`` stays fast by importing neither torch nor numpy (timed in benchmarks, not here)."""
    code = (
        "import sys; from innaudit.cli import cli\n"
        "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit: pass\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "False False", "--help must not import torch or numpy"


def test_python_dash_m_works() -> None:
    """``python -m innaudit`` is the CLI (``--help``: the commands, without importing torch)."""
    result = invoke_subprocess("--help")
    assert result.code == 0 and result.stderr == ""
    assert all(f"  {command} " in result.stdout for command in ("run", "list", "explain", "init"))


def test_explain_and_unknown_ids() -> None:
    code, out, _ = invoke("explain", "roundtrip")
    assert (
        code == 0
        and "||x - x'||_2" in out
        and "nonfinite_fraction: fails above 0, a NaN fails" in out
        and "None" not in out
    )
    code, out, err = invoke("explain", "roundtrp")
    assert (
        code == 2 and out == "" and err.strip() == "error: audit 'roundtrp' does not exist; did you mean 'roundtrip'?"
    )


def test_init_writes_once(tmp_path: Path) -> None:
    target = tmp_path / "innaudit.yaml"
    assert invoke("init", str(target))[0] == 0 and "roundtrip:" in target.read_text()
    code, _, err = invoke("init", str(target))
    assert code == 2 and "--force" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--audit", "nope"], "audit 'nope' does not exist"),
        (["-o", "xml=out.xml"], "format 'xml' is unknown"),
        (["-o", "json="], "names no file"),
        (["-o", "json=/no/such/dir/r.json"], "does not exist"),
        (["--samples", "0"], "samples is 0; expected a count from 1"),
        pytest.param(
            ["--device", "cuda:0"],
            "cuda",
            marks=pytest.mark.skipif(
                torch.cuda.is_available(), reason="a CUDA device is present: --device cuda:0 is valid here"
            ),
        ),
        (["--device", "tpu"], "not a device"),
        (["--data", "unifrom"], "did you mean 'uniform'"),
        (["--ood", "a=uniform", "--ood", "a=gaussian"], "given twice"),
        (["--samples", "many"], "is not a valid integer"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args: list[str], needle: str) -> None:
    code, out, err = invoke("run", f"{FACTORY}:exact", *args)
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err and out == ""


def test_bad_config_file_gives_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("roundtrip:\n  thresholds:\n    rel_error.max: {fail: 1}\n")
    code, _, err = invoke("run", f"{FACTORY}:exact", "--config", str(config))
    assert code == 2 and "did you mean 'rel_error_l2.max'" in err and len(err.strip().splitlines()) == 1


def test_exit_codes_and_exit_zero(tmp_path: Path) -> None:
    assert invoke("run", f"{FACTORY}:exact", "--samples", "100")[0] == 0
    code, out, err = invoke("run", f"{FACTORY}:wrong", "--samples", "100")
    assert code == 1 and "innaudit: FAIL (exit 1)" in out and "FAIL" not in err, "verdict once"
    code, out, err = invoke("run", f"{FACTORY}:wrong", "--samples", "100", "-q")
    assert code == 1 and out == "" and err.strip().startswith("innaudit: FAIL (exit 1)")
    assert invoke("run", f"{FACTORY}:wrong", "--samples", "100", "--exit-zero")[0] == 0
    report = tmp_path / "crash.json"
    code, out, _ = invoke("run", f"{FACTORY}:crash", "--samples", "100", "--exit-zero", "-o", f"json={report}")
    assert code == 2, "a crashed audit is no verdict, and --exit-zero never hides it"
    audits = json.loads(report.read_text())["audits"]
    assert audits[0]["status"] == "error" and audits[0]["error"] == "RuntimeError: boom"
    assert "innaudit: ERROR (exit 2)" in out


def test_audit_selection_and_skip(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert invoke("run", f"{FACTORY}:exact", "--samples", "50", "--skip", "sampling", "-o", f"json={out}")[0] == 0
    audits = {a["id"]: a["status"] for a in json.loads(out.read_text())["audits"]}
    assert audits["roundtrip"] == "pass" and audits["sampling"] == "skip"
    assert invoke("run", f"{FACTORY}:exact", "--samples", "50", "--audit", "sampling", "-o", f"json={out}")[0] == 0
    assert [a["id"] for a in json.loads(out.read_text())["audits"]] == ["sampling"]


def test_several_outputs_in_one_run_and_quiet(tmp_path: Path) -> None:
    code, out, _ = invoke(
        "run",
        f"{FACTORY}:exact",
        "--samples",
        "50",
        "-q",
        "-o",
        f"json={tmp_path / 'a.json'}",
        "-o",
        f"console={tmp_path / 'a.txt'}",
        "-o",
        "json",
    )
    assert code == 0 and out == ""
    assert json.loads((tmp_path / "a.json").read_text())["summary"]["exit_code"] == 0
    assert "\x1b[" not in (tmp_path / "a.txt").read_text()


def test_nothing_audited_is_no_verdict() -> None:
    code, out, _ = invoke("run", f"{FACTORY}:exact", "--samples", "50", "--audit", "bounds", "--audit", "grid")
    assert code == 2 and "innaudit: ERROR (exit 2)" in out


def test_click_usage_errors_exit_2() -> None:
    code, _, err = invoke("run")
    assert code == 2 and "Missing argument" in err


def test_ctrl_c_is_no_verdict(tmp_path: Path) -> None:
    import os
    import signal

    started = tmp_path / "started"
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "innaudit", "run", f"{FACTORY}:slow", "-o", f"json={report}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "INNAUDIT_TEST_STARTED": str(started)},
    )
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert started.exists(), proc.communicate()[1]
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "interrupted" in err and "Traceback" not in err
    assert not report.exists(), "an interrupted run writes no report"


def test_explain_cites_only_documents_that_exist_and_words_every_limit() -> None:
    """Every audit's ``explain``: no ``None`` where a limit is not set, and every ``docs/...``
    or README section it points at exists (``explain attack`` cited a README comparison that
    did not)."""
    from innaudit.audits import REGISTRY

    for audit_id, cls in REGISTRY.items():
        text = cls.explain()
        assert "None" not in text and "warn >" not in text, audit_id
        for doc in re.findall(r"docs/[\w.-]+\.md", text):
            assert (REPO / doc).is_file(), (audit_id, doc)
        assert "README compares" not in text, audit_id
    attack = REGISTRY["attack"].explain()
    assert "docs/attack.md" in attack
    assert "| `digits-affine-deep.pt` | reconstruction |" in (REPO / "docs" / "attack.md").read_text()
