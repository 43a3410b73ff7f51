"""The whole battery on a CUDA device: every audit runs there (no tensor left on the CPU).

Skipped, with the reason, where torch sees no CUDA device.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, read_report

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; torch sees none"),
]

CHECKPOINTS = REPO / "checkpoints"


@pytest.mark.parametrize(
    "checkpoint", ["digits-affine.pt", "checkerboard-residual.pt", "checkerboard-affine.pt", "digits-residual.pt"]
)
def test_every_audit_runs_on_cuda(run_cli, tmp_path: Path, checkpoint: str) -> None:
    out = tmp_path / "r.json"
    result = run_cli(
        "run",
        CHECKPOINTS / checkpoint,
        "--device",
        "cuda",
        "--samples",
        "64",
        "--attack-samples",
        "4",
        "-o",
        f"json={out}",
    )
    report = read_report(out)
    assert report["run"]["device"] == "cuda"
    errors = {a["id"]: a["message"] for a in report["audits"] if a["status"] == "error"}
    assert not errors, errors
    assert result.code in (0, 1), result.stderr
    ran = {a["id"] for a in report["audits"] if a["status"] != "skip"}
    assert {"roundtrip", "sampling", "attack", "spectrum", "logdet"} <= ran


# Between them these small models give every audit something to measure: the residual flow on
# the plane the grid and the fixed-point convergence, the digits flow blocks for layers, gradient
# and bounds, the TarFlow its token trace (only that audit there: the rest are measured above,
# and a TarFlow's Jacobians are the slow part of a CPU check of this test).
EVERY_AUDIT_ON = (("checkerboard-residual.pt", None), ("digits-affine.pt", None), ("patches-tarflow.pt", ("tokens",)))


def test_every_registered_audit_runs_on_cuda_on_some_small_model(run_cli, tmp_path: Path) -> None:
    from innaudit.audits import REGISTRY

    measured: set[str] = set()
    for checkpoint, audits in EVERY_AUDIT_ON:
        out = tmp_path / f"{checkpoint}.json"
        chosen = [arg for aid in (audits or REGISTRY) for arg in ("--audit", aid)]
        result = run_cli(
            "run", CHECKPOINTS / checkpoint, *chosen, "--device", "cuda", "--samples", "32", "--attack-samples", "2",
            "-o", f"json={out}",
        )  # fmt: skip
        report = read_report(out)
        assert report["run"]["device"] == "cuda", result.stderr
        errors = {a["id"]: a["message"] for a in report["audits"] if a["status"] == "error"}
        assert not errors, (checkpoint, errors)
        measured |= {a["id"] for a in report["audits"] if a["status"] != "skip"}
    assert measured == set(REGISTRY), sorted(set(REGISTRY) - measured)
