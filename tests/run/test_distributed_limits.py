"""``--timeout`` and ``--max-memory`` under ``torchrun``: each rank keeps its own clock and memory
limit in a parent process while its child joins the job and audits its share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import invoke_subprocess
from tests.run.test_distributed import CHECKPOINT, _ranks, _strip
from tests.run.test_isolation import FACTORY


@pytest.mark.slow
def test_the_timeout_is_the_jobs_and_keeps_the_finished_audits(tmp_path: Path) -> None:
    # the round trip on data finishes; the sampling audit's prior draws hang the inverse on both ranks
    report = tmp_path / "r.json"
    codes = _ranks(
        [
            f"{FACTORY}:hangs",
            "--audit",
            "roundtrip",
            "--audit",
            "sampling",
            "--samples",
            "64",
            "--timeout",
            "8",
            "-q",
            "-o",
            f"json={report}",
        ],
        tmp_path,
        timeout=90,
    )
    assert codes == [2, 2]
    data = json.loads(report.read_text())
    assert data["run"]["world_size"] == 2  # the children joined the job: the work was shared
    assert {a["id"]: a["status"] for a in data["audits"]} == {"roundtrip": "pass", "sampling": "error"}
    assert "timed out after 8 s (--timeout)" in data["audits"][1]["message"]
    assert "error: rank 1: the run was stopped: timed out after 8 s" in (tmp_path / "err1").read_text()
    assert not (tmp_path / "out1").read_text()  # rank 1 writes no report


@pytest.mark.slow
def test_a_memory_limited_job_gives_the_report_of_one_process(tmp_path: Path) -> None:
    one, many = tmp_path / "one.json", tmp_path / "many.json"
    args = [str(CHECKPOINT), "--audit", "roundtrip", "--samples", "64", "--batch-size", "16", "-q"]
    assert _ranks([*args, "--max-memory", "3G", "-o", f"json={many}"], tmp_path) == [1, 1]
    assert invoke_subprocess("run", *args, "-o", f"json={one}").code == 1
    a, b = json.loads(one.read_text()), json.loads(many.read_text())
    assert b["run"]["world_size"] == 2
    assert _strip(a["audits"]) == _strip(b["audits"])
