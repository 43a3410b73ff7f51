"""``-o FORMAT=PATH`` targets are checked before the run and never clobbered.

A regular file or a new path is written atomically; a character device or a FIFO is written in
place (never replaced); a symlink keeps the link and its target file gets the report; an input
of the run, a path given twice or an unwritable folder is exit 2 before any audit.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import CliResult, read_report

FAST = ("--audit", "roundtrip", "--samples", "20")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root (as in CI containers)")
def test_a_null_device_stays_a_device(run_cli: Callable[..., CliResult], model: Path, tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    result = run_cli("run", model, *FAST, "-o", f"json={null}")
    assert result.code == 0, result.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_a_fifo_receives_the_report(run_cli: Callable[..., CliResult], model: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run_cli("run", model, *FAST, "-o", f"json={fifo}")
    reader.join(timeout=60)
    assert result.code == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and b'"schema_version"' in got[0]


def test_a_symlink_is_kept_and_its_target_gets_the_report(
    run_cli: Callable[..., CliResult], model: Path, tmp_path: Path
) -> None:
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    link.symlink_to(real)
    assert run_cli("run", model, *FAST, "-o", f"json={link}").code == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert read_report(real)["summary"]["exit_code"] == 0


@pytest.mark.parametrize("what", ["model", "config", "data"])
def test_an_input_of_the_run_is_refused_before_the_run(
    run_cli: Callable[..., CliResult], model: Path, tmp_path: Path, what: str
) -> None:
    import numpy as np

    config, data = tmp_path / "c.yaml", tmp_path / "d.npy"
    config.write_text("seed: 0\n")
    np.save(data, np.full((8, 4), 0.5, dtype=np.float32))
    target = {"model": model, "config": config, "data": data}[what]
    before = target.read_bytes()
    result = run_cli("run", model, *FAST, "--config", config, "--data", data, "-o", f"json={target}")
    assert result.code == 2
    assert "an input of this command" in result.stderr
    assert target.read_bytes() == before


def test_a_hard_link_to_the_model_is_refused(run_cli: Callable[..., CliResult], model: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias.json"
    os.link(model, alias)
    assert run_cli("run", model, *FAST, "-o", f"json={alias}").code == 2
    assert model.read_bytes() == alias.read_bytes()


def test_one_path_for_two_formats_is_refused(run_cli: Callable[..., CliResult], model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("run", model, *FAST, "-o", f"json={out}", "-o", f"html={out}")
    assert result.code == 2 and "same file" in result.stderr
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_found_before_the_run(
    run_cli: Callable[..., CliResult], model: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_cli("run", model, *FAST, "-o", f"json={locked / 'r.json'}")
    finally:
        locked.chmod(0o700)
    assert result.code == 2 and "cannot write in folder" in result.stderr
    assert "innaudit: PASS" not in result.stderr, "refused before the run, not after"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_folder_no_one_can_write_is_found_before_the_run(run_cli: Callable[..., CliResult], model: Path) -> None:
    result = run_cli("run", model, *FAST, "-o", "json=/proc/innaudit-report.json")  # even root cannot
    assert result.code == 2 and "cannot write in folder" in result.stderr
    assert "innaudit: PASS" not in result.stderr, "refused before the run, not after"


def test_a_folder_as_target_is_refused(run_cli: Callable[..., CliResult], model: Path, tmp_path: Path) -> None:
    result = run_cli("run", model, *FAST, "-o", f"json={tmp_path}")
    assert result.code == 2 and "is a folder" in result.stderr


def test_render_refuses_to_overwrite_its_input(run_cli: Callable[..., CliResult], model: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert run_cli("run", model, *FAST, "-o", f"json={report}").code == 0
    before = report.read_bytes()
    assert run_cli("render", report, "-o", f"html={report}").code == 2
    assert report.read_bytes() == before
