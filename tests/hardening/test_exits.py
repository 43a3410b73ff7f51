"""A crash never reads as 0 or 1: SystemExit and os._exit from a model, signals to the parent.

Round 3 (issue 28, items 2, 6, 7 and 13): in-process, ``os._exit`` in the model is an error
with a report, an ``atexit`` handler cannot change the exit code, a segfault names itself, a
``BaseException`` from the shape probe is one line and exit 2; under ``--timeout``, a child
killed by a real-time signal and a time-out while the model loads still give a report; SIGTERM
without ``--timeout`` writes the partial report with its plan.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import REPO, CliResult, read_report, subprocess_env

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


def _wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 240) -> int:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    return int(path.read_text())


def _popen(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "innaudit", *map(str, args)],
        cwd=REPO,
        env=subprocess_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- in-process: what no model can fake (item 2) ------------------------------------------------
def test_os_exit_in_the_model_without_isolation_is_an_error_with_a_report(
    cli_subprocess: Callable[..., CliResult], tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    result = cli_subprocess(
        "run", f"{HOSTILE}:os_exit0", "--audit", "roundtrip", "--samples", "8", "-o", f"json={report}"
    )
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    audit = _roundtrip(report)
    assert audit["status"] == "error" and "os._exit(0)" in str(audit["message"])


def test_an_atexit_handler_of_the_model_cannot_turn_a_failure_into_a_pass(
    cli_subprocess: Callable[..., CliResult], tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    result = cli_subprocess(
        "run", f"{HOSTILE}:atexit_exit0", "--audit", "roundtrip", "--samples", "8", "-o", f"json={report}"
    )
    assert result.code == 1, result.stderr
    assert read_report(report)["summary"]["exit_code"] == 1


def test_a_segfault_in_process_names_itself_and_never_exits_0_1_or_2(
    cli_subprocess: Callable[..., CliResult],
) -> None:
    result = cli_subprocess("run", f"{HOSTILE}:segfault", "--audit", "roundtrip", "--samples", "8")
    assert result.code == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in result.stderr


@pytest.mark.parametrize("name", ["generator_exit", "base_exception"])
@pytest.mark.parametrize("flags", [(), ("--exit-zero",)])
def test_a_base_exception_from_the_shape_probe_is_one_line_and_exit_2(
    run_cli: Callable[..., CliResult], name: str, flags: tuple[str, ...]
) -> None:
    result = run_cli("run", f"{HOSTILE}:{name}", "--audit", "roundtrip", "--samples", "8", *flags)
    assert result.code == 2
    assert len(result.stderr_lines) == 1 and "forward pass fails" in result.stderr
    assert "Traceback" not in result.stderr


# -- stopped runs keep their report (items 7, 13) -------------------------------------------------
@pytest.mark.slow
def test_a_child_killed_by_a_realtime_signal_still_gives_the_partial_report(
    cli_subprocess: Callable[..., CliResult], tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    result = cli_subprocess(
        "run",
        f"{HOSTILE}:realtime_signal",
        "--audit",
        "roundtrip",
        "--samples",
        "8",
        "--timeout",
        "300",
        "-o",
        f"json={report}",
    )
    assert result.code == 2, result.stderr
    assert "internal error" not in result.stdout + result.stderr
    assert "the run was stopped: the audit process was killed by SIGRTMIN+3" in result.stdout
    assert "killed by SIGRTMIN+3" in str(_roundtrip(report)["message"])


@pytest.mark.slow
def test_a_timeout_while_loading_says_so_and_writes_a_report(
    cli_subprocess: Callable[..., CliResult], tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    result = cli_subprocess(
        "run", f"{HOSTILE}:slow_loader", "--audit", "roundtrip", "--timeout", "3", "-o", f"json={report}"
    )
    assert result.code == 2, result.stderr
    assert "could not be loaded" not in result.stderr
    data = read_report(report)
    assert data["summary"]["exit_code"] == 2 and data["audits"] == []
    assert "timed out after 3 s" in data["errors"][0] and "loading" in data["errors"][0]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_without_timeout_writes_the_partial_report_with_its_plan(tmp_path: Path, signum: int) -> None:
    pid_file, report = tmp_path / "pid", tmp_path / "r.json"
    proc = _popen(
        "run",
        f"{HOSTILE}:late_sleeper",
        "--audit",
        "roundtrip",
        "--samples",
        "8",
        "--budget",
        "10m",
        "-o",
        f"json={report}",
        env={"INNAUDIT_TEST_PID_FILE": str(pid_file)},
    )
    try:
        assert _wait_for(pid_file, proc) == proc.pid, "the model runs in the innaudit process"
        _wait_for(tmp_path / "pid.hang", proc)  # past the plan's one-sample timings, in the audit
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, stderr
    data = read_report(report)
    assert data["errors"] == [f"the run was stopped by {signal.Signals(signum).name}"]
    assert _roundtrip(report)["status"] == "error"
    assert [a["id"] for a in data["run"]["plan"]["audits"]] == ["roundtrip"]
    assert data["run"]["threads"]["source"] in {"measured", "caller", "option", "environment"}, data["run"]
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_a_c_level_exit_in_process_is_exit_2(cli_subprocess: Callable[..., CliResult], tmp_path: Path) -> None:
    result = cli_subprocess("run", f"{HOSTILE}:c_exit0", "--audit", "roundtrip", "--samples", "8")
    assert result.code == 2, result.stderr
    assert "through the C library's exit()" in result.stderr


def test_a_c_level_underscore_exit_in_process_is_beyond_the_guards(
    cli_subprocess: Callable[..., CliResult], tmp_path: Path
) -> None:
    """What the README says cannot be guarded in-process: ``_exit(0)`` from C ends the process
    with 0 and no report. Under isolation it is exit 2 (the next test)."""
    report = tmp_path / "r.json"
    result = cli_subprocess(
        "run", f"{HOSTILE}:c_underscore_exit0", "--audit", "roundtrip", "--samples", "8", "-o", f"json={report}"
    )
    assert result.code == 0 and not report.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("c_underscore_exit0", "exited with code 0 before it finished"),
        ("c_exit0", "exited with code 0 before it finished"),
        ("segfault", "killed by SIGSEGV"),
    ],
)
def test_under_isolation_any_early_end_of_the_child_is_exit_2_with_a_report(
    cli_subprocess: Callable[..., CliResult], tmp_path: Path, name: str, reason: str
) -> None:
    report = tmp_path / "r.json"
    result = cli_subprocess(
        "run", f"{HOSTILE}:{name}", "--audit", "roundtrip", "--samples", "8", "--timeout", "300", "-o", f"json={report}"
    )
    assert result.code == 2, result.stderr
    assert reason in str(_roundtrip(report)["message"])


def test_a_thread_the_model_left_running_does_not_delay_the_exit(cli_subprocess: Callable[..., CliResult]) -> None:
    start = time.monotonic()
    result = cli_subprocess("run", f"{HOSTILE}:stray_thread", "--audit", "roundtrip", "--samples", "8", timeout=120)
    assert result.code == 0, result.stderr
    assert time.monotonic() - start < 100


@pytest.mark.parametrize("name", ["exit_at_load", "os_exit_at_load"])
def test_an_exit_while_loading_is_exit_2(cli_subprocess: Callable[..., CliResult], name: str) -> None:
    result = cli_subprocess("run", f"{HOSTILE}:{name}", "--audit", "roundtrip", "--samples", "8")
    assert result.code == 2, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1 and "exit" in result.stderr


def test_an_allocation_torch_refuses_is_an_error(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = run_cli("run", f"{HOSTILE}:alloc_bomb", "--audit", "roundtrip", "--samples", "8", "-o", f"json={report}")
    assert result.code == 2, result.stderr
    assert "allocate" in str(_roundtrip(report)["message"])
