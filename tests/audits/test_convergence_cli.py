"""``innaudit run`` on a user's block whose iterative inverse is capped below convergence: the
library returns finite numbers, the convergence audit fails and the run exits 1."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tests.audits import capped_models
from tests.helpers import invoke_cli, read_report

MODELS = Path(__file__).resolve().parent / "capped_models.py"


def _run(tmp_path: Path, factory: str) -> tuple[int, dict]:
    x = np.random.default_rng(0).uniform(-3, 3, (32, capped_models.DIM)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.json"
    result = invoke_cli(
        "run", f"{MODELS}:{factory}", "--data", tmp_path / "x.npy", "--audit", "convergence",
        "--samples", 32, "--no-progress", "-o", f"json={out}",
    )  # fmt: skip
    assert result.code in (0, 1), result.stderr
    return result.code, read_report(out)


def test_a_capped_solver_with_finite_output_fails_the_run(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-3, 3, (32, capped_models.DIM)).astype(np.float32)
    import torch

    block = capped_models.capped().layers[0]
    z = block(torch.from_numpy(x))[0]
    assert torch.isfinite(block.inverse(z)).all()  # the library's answer: finite, no warning
    code, report = _run(tmp_path, "capped")
    assert code == 1
    (audit,) = report["audits"]
    assert audit["id"] == "convergence" and audit["status"] == "fail"
    for result in audit["results"]:
        m = result["metrics"]
        assert m["nonconverged_fraction"] > 0.9 and m["cap_hit_fraction"] == m["nonconverged_fraction"]
        (row,) = result["series"]["blocks"]
        assert row["max_iter"] == 3 and row["iterations_max"] == 3
        # finite, and far above the solver's tolerance 1e-6: the cap stopped it, not convergence
        assert all(math.isfinite(r) for r in row["residual"]) and row["residual_max"] > 1e-4
    rules = {d["rule"]: d["text"] for d in report["diagnosis"]}
    text = rules["convergence-in-distribution"]
    assert "did not converge" in text and "stopped at its cap of 3 iterations" in text
    assert "the error is the solver's" in rules["convergence-solver"]  # a tighter tolerance, more steps fix it


def test_the_same_block_with_enough_iterations_passes(tmp_path: Path) -> None:
    code, report = _run(tmp_path, "enough")
    (audit,) = report["audits"]
    assert audit["status"] == "pass" and code == 0
    assert all(r["metrics"]["nonconverged_fraction"] == 0.0 for r in audit["results"])
