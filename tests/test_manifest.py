"""checkpoints/MANIFEST.md lists every shipped checkpoint with its true sha256 and command."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
ROW = re.compile(
    r"^\| `([\w.-]+\.pt)` \| `innaudit train ([\w-]+) -o checkpoints/\1 --seed (\d+)` \| (\d+) \| `([0-9a-f]{64})` \|"
)


def _rows() -> dict[str, tuple[str, int, str]]:
    rows = {}
    for line in (ROOT / "MANIFEST.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            name, recipe, seed, seed_col, digest = match.groups()
            assert seed == seed_col
            rows[name] = (recipe, int(seed), digest)
    return rows


def test_every_checkpoint_is_listed_with_its_sha256_and_is_small() -> None:
    rows = _rows()
    files = sorted(p.name for p in ROOT.glob("*.pt"))
    assert files and sorted(rows) == files
    for name, (_recipe, _seed, digest) in rows.items():
        data = (ROOT / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        assert len(data) < 4 << 20, name


def test_each_checkpoint_records_the_command_that_made_it() -> None:
    for name, (recipe, seed, _) in _rows().items():
        provenance = torch.load(ROOT / name, map_location="cpu", weights_only=True)["provenance"]
        assert provenance["seed"] == seed and provenance["recipe"] == recipe
        assert provenance["command"] == f"innaudit train {recipe} --seed {seed} -o PATH"


def test_every_checkpoint_records_the_torch_build_the_manifest_states() -> None:
    """The MANIFEST says torch 2.13.0 (CPU build); two files once recorded 2.14.1+cu130."""
    assert "torch 2.13.0 (CPU build, `2.13.0+cpu`" in (ROOT / "MANIFEST.md").read_text()
    for name in _rows():
        provenance = torch.load(ROOT / name, map_location="cpu", weights_only=True)["provenance"]
        assert provenance["torch"] == "2.13.0+cpu", name
