"""--timeout and --max-memory: a hang or an allocation bomb ends as exit 2 with partial results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

FACTORY = REPO / "tests" / "audits" / "cli_models.py"

# each test starts innaudit and its isolated child: two interpreters importing torch, and some wait
# for a deadline on purpose
pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "innaudit", "run", *args], capture_output=True, text=True, timeout=timeout
    )


def test_a_hanging_inverse_is_stopped_and_reported(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = _run(f"{FACTORY}:hangs", "--samples", "200", "--timeout", "8", "-o", f"json={report}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(report.read_text())
    statuses = {a["id"]: a["status"] for a in data["audits"] if a["status"] != "skip"}
    assert statuses == {"roundtrip": "pass", "sampling": "error"}, "the finished audit is kept"
    sampling = next(a for a in data["audits"] if a["id"] == "sampling")
    assert "timed out after 8 s" in sampling["message"]
    assert data["summary"]["exit_code"] == 2 and data["errors"]
    threads = data["run"]["threads"]  # the policy's record, as in a finished run's report
    assert isinstance(threads, dict) and threads["threads"] >= 1 and threads["source"], threads


def test_an_isolated_run_gives_the_same_verdict_as_in_process(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert _run(f"{FACTORY}:wrong", "--samples", "100", "-o", f"json={a}").returncode == 1
    assert _run(f"{FACTORY}:wrong", "--samples", "100", "--timeout", "100", "-o", f"json={b}").returncode == 1
    strip = lambda d: [(x["id"], [r["metrics"] for r in x["results"]]) for x in d["audits"]]  # noqa: E731
    assert strip(json.loads(a.read_text())) == strip(json.loads(b.read_text()))


def test_a_memory_limit_turns_an_allocation_bomb_into_an_error(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = _run(f"{FACTORY}:greedy", "--samples", "50", "--max-memory", "6G", "-o", f"json={report}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    audits = json.loads(report.read_text())["audits"]
    assert audits[0]["status"] == "error" and "allocate" in audits[0]["message"]


def test_load_errors_in_the_child_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    proc = _run(str(empty), "--timeout", "60")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_a_checkpoint_file_audits_under_a_memory_limit(tmp_path: Path) -> None:
    # the checkpoint is read in pieces: one read of the whole budget would reserve 2 GiB at once
    # and fail under the limit it is meant to enforce
    report = tmp_path / "r.json"
    checkpoint = REPO / "checkpoints" / "digits-affine.pt"
    proc = _run(
        str(checkpoint), "--audit", "roundtrip", "--samples", "32", "--max-memory", "2G", "-o", f"json={report}"
    )
    assert proc.returncode == 1, proc.stderr  # the gate's verdict on this checkpoint, not a load error
    assert json.loads(report.read_text())["audits"][0]["status"] == "fail"
