"""One write path for every file innaudit writes (issue 28, item 1).

``render LOG.jsonl -o html=``, ``init``, ``train -o``, ``--save-witnesses``, the monitor's log,
``Report.save`` and ``save_checkpoint`` go through the same target check and writer as
``run -o``: an input of the command is refused (exit 2, the input untouched), a device or FIFO
is written in place, a symlink is followed, ``-`` is stdout.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from innaudit.core.errors import UsageError
from innaudit.monitor import InvertibilityMonitor
from tests.hardening.tiny import save_tiny
from tests.helpers import REPO, CliResult, read_report
from tests.monitor.models import ScaleCoupling, data

FAST = ("--audit", "roundtrip", "--samples", "20")


@pytest.fixture()
def recipe(monkeypatch: pytest.MonkeyPatch) -> str:
    """The checkerboard-additive recipe cut to 6 steps of 32 samples (a second of training)."""
    from innaudit.train import RECIPES, Recipe, paper_recipes

    name = "tiny-write-path"
    setup = paper_recipes.Setup(
        "coupling-vector",
        {**paper_recipes.TOY_COUPLING, "coupling": "additive", "steps": 2, "hidden": 8},
        "checkerboard",
        "nll",
        6,
        32,
        2e-3,
    )

    def function(seed: int, progress: object = None, steps: int | None = None) -> object:
        return paper_recipes.train(name, setup, seed, progress, steps)

    monkeypatch.setitem(RECIPES, name, Recipe(name, "tiny test recipe", function))
    return name


@pytest.fixture()
def log(tmp_path: Path) -> Path:
    """A monitor log of three checks."""
    path = tmp_path / "monitor.jsonl"
    monitor = InvertibilityMonitor(ScaleCoupling(), data=data(), ood=(), every=1, log=path, samples=8)
    for step in range(3):
        monitor.step(step)
    return path


def _fifo_reader(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    return reader, got


def test_no_module_but_the_writer_calls_the_atomic_write() -> None:
    """The acceptance check of the issue: ``grep -rn "write_atomic(" innaudit`` finds the writer only."""
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in (REPO / "innaudit").rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "write_atomic(" in line and path.name != "atomic.py"
    ]
    assert found == []


# -- render LOG.jsonl ------------------------------------------------------------------------
def test_render_of_a_log_refuses_the_log_itself(run_cli: Callable[..., CliResult], log: Path) -> None:
    before = log.read_bytes()
    result = run_cli("render", log, "-o", f"html={log}")
    assert result.code == 2 and "an input of this command" in result.stderr
    assert log.read_bytes() == before


def test_render_of_a_log_follows_a_symlink_and_writes_a_fifo_in_place(
    run_cli: Callable[..., CliResult], log: Path, tmp_path: Path
) -> None:
    page, link = tmp_path / "page.html", tmp_path / "link.html"
    link.symlink_to(page)
    assert run_cli("render", log, "-o", f"html={link}").code == 0
    assert link.is_symlink() and "<svg" in page.read_text()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader, got = _fifo_reader(fifo)
    assert run_cli("render", log, "-o", f"html={fifo}").code == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and b"<svg" in got[0]


def test_render_of_a_log_to_dash_is_stdout(
    run_cli: Callable[..., CliResult], log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("render", log, "-o", "html=-")
    assert result.code == 0 and result.stdout.startswith("<!DOCTYPE html>")
    assert not (tmp_path / "-").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root (as in CI containers)")
def test_render_of_a_log_keeps_a_character_device(run_cli: Callable[..., CliResult], log: Path, tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert run_cli("render", log, "-o", f"html={null}").code == 0
    assert stat.S_ISCHR(os.lstat(null).st_mode)


# -- init ------------------------------------------------------------------------------------
def test_init_force_follows_a_symlink(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    real, link = tmp_path / "real.yaml", tmp_path / "innaudit.yaml"
    real.write_text("old\n")
    link.symlink_to(real)
    assert run_cli("init", link).code == 2, "an existing file needs --force"
    assert run_cli("init", link, "--force").code == 0
    assert link.is_symlink() and "audits" in real.read_text()


def test_init_writes_a_fifo_in_place_and_dash_is_stdout(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader, got = _fifo_reader(fifo)
    assert run_cli("init", fifo).code == 0, "a FIFO is not a file to overwrite: no --force needed"
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and b"audits" in got[0]
    result = run_cli("init", "-")
    assert result.code == 0 and "audits" in result.stdout


def test_init_into_a_folder_is_one_line(run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    result = run_cli("init", tmp_path / "missing" / "x.yaml")
    assert result.code == 2 and "does not exist" in result.stderr and len(result.stderr_lines) == 1


# -- train -o --------------------------------------------------------------------------------
def test_train_follows_a_symlink_and_refuses_its_own_log(
    run_cli: Callable[..., CliResult],
    recipe: str,
    tmp_path: Path,
) -> None:
    real, link = tmp_path / "real.pt", tmp_path / "link.pt"
    link.symlink_to(real)
    result = run_cli("train", recipe, "-o", link, "--no-progress")
    assert result.code == 0, result.stderr
    assert link.is_symlink() and torch.load(real, weights_only=True)["format"]
    log = tmp_path / "m.jsonl"
    refused = run_cli("train", recipe, "-o", log, "--monitor-every", 3, "--monitor-log", log)
    assert refused.code == 2 and "same file" in refused.stderr
    assert not log.exists(), "refused before training"


def test_train_into_a_folder_is_refused_before_training(
    run_cli: Callable[..., CliResult],
    recipe: str,
    tmp_path: Path,
) -> None:
    result = run_cli("train", recipe, "-o", tmp_path, "--no-progress")
    assert result.code == 2 and "is a folder" in result.stderr


# -- --save-witnesses and --baseline -----------------------------------------------------------
def test_witnesses_never_overwrite_the_run_s_data(
    run_cli: Callable[..., CliResult], model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    data_file = folder / "originals.npy"
    np.save(data_file, np.full((8, 4), 0.5, dtype=np.float32))
    before = data_file.read_bytes()
    result = run_cli(
        "run", model, "--audit", "attack", "--samples", "8", "--data", data_file, "--save-witnesses", folder
    )
    assert result.code == 2 and "an input of this command" in result.stderr
    assert data_file.read_bytes() == before


def test_witnesses_follow_symlinks(run_cli: Callable[..., CliResult], model: Path, tmp_path: Path) -> None:
    folder, elsewhere, data_file = tmp_path / "w", tmp_path / "elsewhere.npy", tmp_path / "d.npy"
    folder.mkdir()
    (folder / "witnesses.npy").symlink_to(elsewhere)
    np.save(data_file, np.full((8, 4), 0.5, dtype=np.float32))
    result = run_cli(
        "run", model, "--audit", "attack", "--data", data_file, "--attack-samples", "2", "--save-witnesses", folder
    )
    assert result.code in (0, 1), result.stderr
    assert (folder / "witnesses.npy").is_symlink() and np.load(elsewhere).shape[1:] == (4,)


def test_a_report_never_replaces_its_own_baseline(
    run_cli: Callable[..., CliResult], model: Path, tmp_path: Path
) -> None:
    baseline = tmp_path / "bl.json"
    assert run_cli("run", model, *FAST, "-o", f"json={baseline}").code == 0
    before = baseline.read_bytes()
    result = run_cli("run", model, *FAST, "--baseline", baseline, "-o", f"json={baseline}")
    assert result.code == 2 and "an input of this command" in result.stderr
    assert baseline.read_bytes() == before


# -- the library's writers --------------------------------------------------------------------
def test_report_save_and_save_checkpoint_follow_symlinks_and_keep_fifos(model: Path, tmp_path: Path) -> None:
    import innaudit

    report = innaudit.audit(str(model), audits=["roundtrip"], samples=8)
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    link.symlink_to(real)
    report.save(link)
    assert link.is_symlink() and read_report(real)["schema_version"] == 1
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader, got = _fifo_reader(fifo)
    report.save(fifo, "json")
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and b'"schema_version"' in got[0]
    ckpt, ckpt_link = tmp_path / "c.pt", tmp_path / "c-link.pt"
    ckpt_link.symlink_to(ckpt)
    save_tiny(ckpt_link)
    assert ckpt_link.is_symlink() and torch.load(ckpt, weights_only=True)["architecture"]["name"] == "coupling-vector"


def test_the_monitor_log_follows_a_symlink_and_refuses_a_folder(tmp_path: Path) -> None:
    real, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(real)
    monitor = InvertibilityMonitor(ScaleCoupling(), data=data(), ood=(), every=1, log=link, samples=8)
    monitor.step(0)
    assert link.is_symlink() and real.read_text().count("\n") == 2
    with pytest.raises(UsageError, match=re.escape("is a folder")):
        InvertibilityMonitor(ScaleCoupling(), data=data(), ood=(), every=1, log=tmp_path, samples=8)
