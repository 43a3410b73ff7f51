"""``checkpoints/patches-glow-additive.pt``, the bounded twin of ``patches-glow``: where the
affine Glow's inverse is non-finite on every noise input, the additive one round-trips them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import invoke_cli

pytest.importorskip("skimage")
ROOT = Path(__file__).resolve().parents[2] / "checkpoints"


@pytest.mark.parametrize(("name", "code", "noise"), [("patches-glow-additive", 0, 0.0), ("patches-glow", 1, 1.0)])
def test_noise_breaks_the_affine_glow_and_not_its_additive_twin(
    tmp_path: Path, name: str, code: int, noise: float
) -> None:
    out = tmp_path / "r.json"
    result = invoke_cli(
        "run", ROOT / f"{name}.pt", "--ood", "uniform", "--ood", "rademacher", "--ood", "textures",
        "--audit", "roundtrip", "--samples", 32, "--no-progress", "-o", f"json={out}",
    )  # fmt: skip
    assert result.code == code, result.stderr
    (audit,) = json.loads(out.read_text())["audits"]
    shares = {r["dataset"]: r["metrics"]["nonfinite_fraction"] for r in audit["results"]}
    assert shares == {"patches:test": 0.0, "uniform": noise, "rademacher": noise, "textures": 0.0}
