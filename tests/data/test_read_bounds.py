"""Data and condition files are read once, bounded by ``--samples`` (issue 28, items 8 and 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from innaudit.loading.adapters import resolve_condition
from innaudit.safeio.arrays import read_array
from tests.helpers import invoke_cli, invoke_subprocess

HERE = Path(__file__).resolve().parent


def test_a_data_file_truncated_mid_run_gives_a_finished_run_not_sigbus(tmp_path: Path) -> None:
    """The model's first forward empties the ``.npy``; a live memory map of it raised SIGBUS
    (exit 135, no report) at the next batch. The rows used are read once, before the model runs."""
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((4000, 64), dtype=np.float32))
    out = tmp_path / "r.json"
    result = invoke_subprocess(
        "run",
        f"{HERE / 'truncating_models.py'}:build",
        "--data",
        data,
        "--audit",
        "roundtrip",
        "--ood",
        "constant:0.5",
        "--samples",
        4000,
        "--batch-size",
        256,
        "--no-progress",
        "-o",
        f"json={out}",
        env={"INNAUDIT_TEST_TRUNCATE": str(data)},
    )
    assert data.stat().st_size == 0  # the file really was emptied during the run
    assert result.code == 0, result.stderr
    report = json.loads(out.read_text())
    metrics = report["audits"][0]["results"][0]["metrics"]
    assert metrics["n"] == 4000 and metrics["nonfinite_fraction"] == 0.0


def test_npy_rows_are_copied_not_mapped(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(40, dtype=np.float32).reshape(10, 4))
    array = read_array(tmp_path / "x.npy", None, 3)
    assert isinstance(array, np.ndarray) and not isinstance(array, np.memmap)
    assert array.shape == (3, 4) and float(array[2, 3]) == 11.0
    (tmp_path / "x.npy").write_bytes(b"")  # the file is gone; the rows read stay
    assert float(array.sum()) == float(np.arange(12).sum())


def test_a_truncated_npy_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((100, 64), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:5000])
    result = invoke_cli("run", f"{HERE / 'truncating_models.py'}:build", "--data", path, "--audit", "roundtrip")
    assert result.code == 2 and "truncated" in result.stderr_lines[-1]


def test_condition_rows_are_bounded_by_samples(tmp_path: Path) -> None:
    """A condition file is read as ``--data`` is: its first ``--samples`` rows only (it was read
    whole as float64: a 512 MiB file took 3.2 GB)."""
    rows = np.random.default_rng(1).standard_normal((200_000, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", rows)
    condition = resolve_condition(str(tmp_path / "c.npy"), 16)
    assert tuple(condition.rows.shape) == (16, 8)
    assert np.array_equal(condition.rows.numpy(), rows[:16].astype(np.float64))


@pytest.mark.parametrize("lib", ["zuko"])
def test_condition_rows_in_the_report_follow_samples(tmp_path: Path, lib: str) -> None:
    pytest.importorskip(lib)
    from tests.adapters.helpers import factory

    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "c.npy", np.random.default_rng(3).standard_normal((50_000, 2)).astype(np.float32))
    out = tmp_path / "r.json"
    result = invoke_cli(
        "run",
        factory(lib, "build_conditional"),
        "--data",
        tmp_path / "x.npy",
        "--condition",
        tmp_path / "c.npy",
        "--audit",
        "roundtrip",
        "--ood",
        "constant:0.5",
        "--samples",
        32,
        "--no-progress",
        "-o",
        f"json={out}",
    )
    assert result.code == 0, result.stderr
    assert json.loads(out.read_text())["target"]["condition"]["rows"] == 32
