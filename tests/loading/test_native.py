"""Native checkpoints: self-describing, weights-only loadable, rebuilt exactly."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from innaudit import load_model, save_checkpoint, zoo
from innaudit.core.errors import LoadError
from innaudit.data.digits import DIGITS_DOMAIN

CONFIG = {
    "shape": [1, 8, 8],
    "steps": 2,
    "hidden": 8,
    "coupling": "affine",
    "scale": "sigmoid",
    "permutation": "conv1x1",
    "actnorm": True,
    "seed": 3,
}


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    module = zoo.build("coupling-image", CONFIG)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    path = save_checkpoint(
        tmp_path / "m.pt", module, "coupling-image", CONFIG, DIGITS_DOMAIN, {"recipe": "test", "seed": 3}
    )
    return path, module


def test_save_then_load_gives_the_same_model(tmp_path: Path) -> None:
    path, module = _saved(tmp_path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "innaudit.checkpoint" and raw["data"]["levels"] == 17
    loaded = load_model(str(path))
    assert loaded.target["loader"] == "native" and len(loaded.target["sha256"]) == 64
    assert loaded.target["provenance"] == {"recipe": "test", "seed": 3}
    assert loaded.model.info.domain == DIGITS_DOMAIN
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    module.eval()
    assert torch.equal(loaded.model.forward(x), module(x)[0])
    assert len(loaded.model.blocks()) > 2


def _rewrite(path: Path, change: dict) -> Path:
    raw = torch.load(path, map_location="cpu", weights_only=True)
    raw.update(change)
    buffer = io.BytesIO()
    torch.save(raw, buffer)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"format_version": 99}, "format_version 99"),
        ({"architecture": {"name": "glow-9000", "config": {}}}, "does not know"),
        (
            {"architecture": {"name": "coupling-image", "config": {**CONFIG, "coupling": "quadratic"}}},
            "rejected its stored config",
        ),
        ({"data": {"shape": "x"}}, "malformed"),
        ({"state_dict": {"nope": torch.zeros(1)}}, "do not fit"),
    ],
)
def test_damaged_native_checkpoints_are_one_line_errors(tmp_path: Path, change: dict, needle: str) -> None:
    path, _ = _saved(tmp_path)
    with pytest.raises(LoadError, match=needle):
        load_model(str(_rewrite(path, change)))


def test_checkpoint_files_are_readable_like_other_files(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    assert path.stat().st_mode & 0o044, "not a private 0600 temp file"
    assert not list(tmp_path.glob(".*.tmp"))
