"""``innaudit repair`` on the command line: exit codes, the plan, the files it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import FIXTURE_MODELS, invoke_cli, read_report

FAST = ("--audit", "roundtrip", "--samples", "300", "--steps", "20")


def test_plan_prints_the_remedies_and_exits_0(overflow_ckpt: Path, train_file: Path) -> None:
    result = invoke_cli("repair", overflow_ckpt, "--data", train_file, *FAST, "--plan")
    assert result.code == 0
    assert (
        "apply bounded scale: round trips break off the data or turn non-finite near it (roundtrip[uniform] nonfinite_fraction="
        in result.stdout
    )
    assert result.stderr_lines[-1].startswith("innaudit repair: planned (exit 0)")


def test_repair_writes_the_checkpoint_and_every_report_and_the_fix_holds(
    overflow_ckpt: Path, train_file: Path, tmp_path: Path
) -> None:
    fixed, json_path, html_path = tmp_path / "fixed.pt", tmp_path / "r.json", tmp_path / "r.html"
    result = invoke_cli(
        "repair", overflow_ckpt, "--data", train_file, *FAST, "-o", fixed, "--report", f"json={json_path}",
        "--report", f"html={html_path}",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "remedy bounded scale: fixed: h -> c tanh(h / c) in 1 affine coupling(s)" in result.stdout
    assert "still failing: none" in result.stdout and f"wrote {fixed} (native)" in result.stdout
    assert "against baseline before:" in result.stdout  # the before/after comparison
    report = read_report(json_path)
    assert report["run"]["repair"]["status"] == "repaired" and report["baseline"]["counts"]["improved"] > 0
    assert "Against the baseline" in html_path.read_text()
    again = invoke_cli("run", fixed, "--data", train_file, "--audit", "roundtrip", "--samples", "300", "-q")
    assert again.code == 0, again.stderr


def test_a_wrong_inverse_exits_1_with_no_remedy_and_writes_nothing(tmp_path: Path) -> None:
    data, fixed = tmp_path / "x.npy", tmp_path / "fixed.pt"
    np.save(data, np.random.default_rng(0).random((200, 4)).astype(np.float32))
    result = invoke_cli("repair", f"{FIXTURE_MODELS}:wrong", "--data", data, *FAST, "-o", fixed)
    assert result.code == 1 and "no remedy applies" in result.stdout and not fixed.exists()
    assert result.stderr_lines[-1].startswith("innaudit repair: no-remedy (exit 1)")


def test_bad_arguments_are_one_line_and_exit_2(overflow_ckpt: Path, train_file: Path, tmp_path: Path) -> None:
    missing = invoke_cli("repair", overflow_ckpt, "--data", train_file)
    assert missing.code == 2 and missing.stderr_lines == [
        "error: repair needs -o PATH for the repaired checkpoint (or --plan to see the remedies only)"
    ]
    onto = invoke_cli("repair", overflow_ckpt, "--data", train_file, "-o", overflow_ckpt)
    assert onto.code == 2 and "is an input of this repair" in onto.stderr
    folder = invoke_cli("repair", overflow_ckpt, "--data", train_file, "-o", tmp_path / "no" / "x.pt")
    assert folder.code == 2 and "does not exist" in folder.stderr
    data = invoke_cli("repair", overflow_ckpt, "--data", tmp_path / "nothing.npy", "-o", tmp_path / "x.pt")
    assert data.code == 2 and len(data.stderr_lines) == 1 and "Traceback" not in data.stderr
    assert not (tmp_path / "x.pt").exists()
    budget = invoke_cli("repair", overflow_ckpt, "--data", train_file, "--budget", "soon", "-o", tmp_path / "x.pt")
    assert budget.code == 2 and len(budget.stderr_lines) == 1 and "is not a duration" in budget.stderr
    assert not (tmp_path / "x.pt").exists()
