"""The shipped multi-scale checkpoint: self-describing, and audited with no other argument."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from innaudit.data import default_data
from innaudit.loading import load_model
from tests.helpers import invoke_cli, read_report

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "patches-glow.pt"


def test_checkpoint_names_its_domain_and_maps_to_three_levels() -> None:
    model = load_model(str(CHECKPOINT)).model
    domain = model.info.domain
    assert (domain.shape, domain.levels, domain.name) == ((3, 32, 32), 256, "patches")
    assert default_data(domain) == "patches:test"
    model.forward(torch.full((1, 3, 32, 32), 0.5))
    assert model.latent is not None and model.latent.shapes == ((6, 16, 16), (12, 8, 8), (48, 4, 4))
    assert model.blocks()[-1].info.architecture == "level 2 / block 12: Coupling"


def test_checkpoint_round_trips_test_patches() -> None:
    pytest.importorskip("skimage")
    from innaudit.data.patches import load_patches

    model = load_model(str(CHECKPOINT)).model
    x = torch.from_numpy(load_patches("test")[:16])
    assert float((model.inverse(model.forward(x)) - x).abs().max()) < 1e-3


@pytest.mark.slow
def test_run_with_no_data_argument_finishes_the_default_audits(tmp_path: Path) -> None:
    """No --data: the checkpoint names its test split. Every default audit runs, at a CPU-cheap
    size: few samples, short searches, matrix-free Jacobians with few iterations (the plain
    command takes minutes; its table is in the README)."""
    pytest.importorskip("skimage")
    out, config = tmp_path / "r.json", tmp_path / "c.yaml"
    config.write_text(
        "spectrum: {method: matrix-free, max_iter: 8}\n"
        "layers: {method: matrix-free, max_iter: 8, samples: 2}\n"
        "logdet: {method: matrix-free, probes: 2, steps: 8, samples: 2}\n"
        "precision: {spectrum_samples: 1}\nattack: {steps: 20}\n"
    )
    result = invoke_cli(
        "run",
        CHECKPOINT,
        "--no-progress",
        "--samples",
        4,
        "--attack-samples",
        2,
        "--config",
        config,
        "-o",
        f"json={out}",
    )
    assert result.code in (0, 1), result.stderr
    report = read_report(out)
    assert not report["errors"]
    assert report["run"]["datasets"][0]["name"] == "patches:test"
    assert all(a["status"] != "error" for a in report["audits"])
