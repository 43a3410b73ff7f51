"""A crash never reads as 0 or 1: SystemExit and os._exit from a model, signals to the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, CliResult, read_report, subprocess_env

HOSTILE = Path(__file__).resolve().parent / "hostile_models.py"


def _roundtrip(report: Path) -> dict[str, object]:
    return next(a for a in read_report(report)["audits"] if a["id"] == "roundtrip")


def test_system_exit_0_in_the_inverse_is_an_error_not_a_pass(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = run_cli("run", f"{HOSTILE}:exit0", "--audit", "roundtrip", "--samples", "20", "-o", f"json={report}")
    assert result.code == 2, result.stderr
    assert _roundtrip(report)["status"] == "error"


def test_system_exit_1_in_the_inverse_is_an_error_not_a_gate_failure(
    run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    result = run_cli("run", f"{HOSTILE}:exit1", "--audit", "roundtrip", "--samples", "20", "-o", f"json={report}")
    assert result.code == 2, result.stderr
    assert _roundtrip(report)["status"] == "error"


@pytest.mark.parametrize(
    "name", [pytest.param("exit0", marks=pytest.mark.slow), pytest.param("exit1", marks=pytest.mark.slow), "os_exit0"]
)
def test_exits_from_the_model_under_isolation_end_as_exit_2_with_a_report(
    cli_subprocess: Callable[..., CliResult], tmp_path: Path, name: str
) -> None:
    report = tmp_path / "r.json"
    result = cli_subprocess(
        "run",
        f"{HOSTILE}:{name}",
        "--audit",
        "roundtrip",
        "--samples",
        "20",
        "--timeout",
        "300",
        "-o",
        f"json={report}",
    )
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    data = read_report(report)
    assert data["summary"]["exit_code"] == 2
    assert _roundtrip(report)["status"] == "error"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_parent_of_an_isolated_run_leaves_no_process(tmp_path: Path, signum: int) -> None:
    pid_file = tmp_path / "child.pid"
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "innaudit",
            "run",
            f"{HOSTILE}:sleeper",
            "--audit",
            "roundtrip",
            "--samples",
            "20",
            "--timeout",
            "600",
            "-o",
            f"json={report}",
        ],
        cwd=REPO,
        env=subprocess_env({"INNAUDIT_TEST_PID_FILE": str(pid_file)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        child = int(pid_file.read_text())
        time.sleep(1.0)  # let the child reach the hanging inverse
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        gone = time.monotonic() + 5
        while _alive(child) and time.monotonic() < gone:
            time.sleep(0.1)
        assert not _alive(child), "the audit process outlived its parent"
        assert proc.returncode == 2, stderr
        assert "Traceback" not in stderr
        assert _roundtrip(report)["status"] == "error"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_the_child_dies_with_a_parent_killed_outright(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "innaudit",
            "run",
            f"{HOSTILE}:sleeper",
            "--audit",
            "roundtrip",
            "--samples",
            "20",
            "--timeout",
            "600",
        ],
        cwd=REPO,
        env=subprocess_env({"INNAUDIT_TEST_PID_FILE": str(pid_file)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        child = int(pid_file.read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone = time.monotonic() + 5
        while _alive(child) and time.monotonic() < gone:
            time.sleep(0.1)
        assert not _alive(child), "the audit process outlived a SIGKILL-ed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
