"""The shipped TarFlow checkpoints: the guarded one passes the token audit, its unstable twin
fails it, and the report names the twin's block and token range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import innaudit
from innaudit.core.results import Status
from innaudit.loading import load_model
from tests.helpers import invoke_cli, read_report

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
STABLE, UNSTABLE = CHECKPOINTS / "patches-tarflow.pt", CHECKPOINTS / "patches-tarflow-unstable.pt"


def token_results(path: Path) -> dict[str, Any]:
    config = {"audits": ["tokens"], "samples": 8, "ood": ["gaussian", "rademacher"], "tokens": {"autocast": "none"}}
    report = innaudit.audit(str(path), data="uniform", config=config)
    audit = next(a for a in report.audits if a.id == "tokens")
    return {r.dataset: r for r in audit.results}


@pytest.mark.parametrize("path", [STABLE, UNSTABLE])
def test_checkpoints_name_their_architecture_and_domain(path: Path) -> None:
    model = load_model(str(path)).model
    domain = model.info.domain
    assert (domain.shape, domain.levels, domain.name) == ((3, 32, 32), 256, "patches")
    assert len(model.blocks()) == 5  # the patchify plus four autoregressive blocks
    x = torch.full((2, 3, 32, 32), 0.5)
    assert float((model.inverse(model.forward(x)) - x).abs().max()) < 1e-4


def test_the_guarded_checkpoint_passes_the_token_audit_on_noise() -> None:
    results = token_results(STABLE)
    assert set(results) == {"uniform", "gaussian", "rademacher"}
    for result in results.values():
        assert result.status is Status.PASS, result.dataset
        assert result.metrics["first_token"] == -1
        assert result.metrics["log_scale"]["max"] < 4.6  # softplus of a soft clip at 4


def test_the_unstable_twin_fails_in_its_last_block_and_names_the_tokens() -> None:
    results = token_results(UNSTABLE)
    for name in ("gaussian", "rademacher"):
        m = results[name].metrics
        assert results[name].status is Status.FAIL
        assert m["culprit"] == "4:AR block 3", name
        assert 0 <= m["first_token"] <= m["last_token"] <= 63
        assert m["where"] == f"4:AR block 3, tokens {m['first_token']}-{m['last_token']}"
        assert m["log_scale"]["max"] > 10  # the unbounded exp scale grew


@pytest.mark.slow
def test_the_cli_names_the_twins_block_and_token_in_the_diagnosis(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ("--no-progress", "--audit", "tokens", "--samples", 8, "--ood", "gaussian", "-o", f"json={out}")
    result = invoke_cli("run", UNSTABLE, *args)
    assert result.code == 1, result.stderr
    breaks = [d for d in read_report(out)["diagnosis"] if d["kind"] == "breaks"]
    assert breaks and "4:AR block 3, tokens" in breaks[0]["text"]
    assert invoke_cli("run", STABLE, *args).code == 0
