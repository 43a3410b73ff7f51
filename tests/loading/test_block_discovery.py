"""Blocks are found where people keep them, so a user's own flow gets the localizing audits.

The factory file imports a sibling module (``from couplings import ...``), which works only
because the file's folder is importable, as ``python flow.py`` would have it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from innaudit.loading import load_model
from tests.helpers import invoke_cli

HERE = Path(__file__).resolve().parent / "user_flow"


def test_couplings_in_self_layers_get_layers_gradient_and_bounds_results(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", np.clip(x, -3.9, 3.9))
    out = tmp_path / "r.json"
    result = invoke_cli(
        "run", f"{HERE / 'flow.py'}:build", "--data", tmp_path / "x.npy", "--ood", "uniform",
        "--audit", "layers", "--audit", "gradient", "--audit", "bounds", "--samples", 32,
        "--no-progress", "-o", f"json={out}",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(out.read_text())
    audits = {a["id"]: a for a in report["audits"]}
    assert {a: audits[a]["status"] for a in ("layers", "gradient", "bounds")} == {
        "layers": "pass",
        "gradient": "pass",
        "bounds": "pass",
    }
    assert audits["layers"]["results"][0]["metrics"]["blocks"] == 6
    bounds = audits["bounds"]["results"][0]["metrics"]
    assert bounds["blocks"] == 6 and bounds["violation_fraction"] == 0.0
    assert bounds["forward"]["measured"] <= bounds["forward"]["bound"]
    assert report["target"]["info"]["source"]["blocks"] == "layers (6 blocks)"


@pytest.mark.parametrize(
    ("factory", "where"), [("build_method", "blocks() (6 blocks)"), ("build_hook", "innaudit_blocks() (6 blocks)")]
)
def test_a_blocks_method_and_the_hook(factory: str, where: str) -> None:
    model = load_model(f"{HERE / 'flow.py'}:{factory}").model
    assert len(model.blocks()) == 6 and model.info.source["blocks"] == where
    x = torch.randn(5, 8)
    h = x
    for block in model.blocks():
        h = block.forward(h)
    assert torch.allclose(h, model.forward(x))  # the chain is the model
