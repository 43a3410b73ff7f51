"""The natural-image OOD sets: cut from package images, disjoint from the patches the shipped
image checkpoints were trained on, in the default battery of RGB models, their provenance shown."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.data import Role, resolve_dataset
from innaudit.data.natural import NATURAL, natural_battery
from tests.helpers import invoke_cli

pytest.importorskip("skimage")
RGB = DataDomain(shape=(3, 32, 32), low=0.0, high=1.0, levels=256)
GREY = DataDomain(shape=(1, 16, 16), low=-0.5, high=0.5, levels=256)
ROOT = Path(__file__).resolve().parents[2]


def _skimage_file(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


def test_textures_are_the_crops_of_the_package_images() -> None:
    from PIL import Image

    ds = resolve_dataset("textures", Role.OOD, RGB, 10_000, 0)
    assert ds.size == 3 * (512 // 32) ** 2 and ds.origin["images"] == ["brick.png", "grass.png", "gravel.png"]
    grass = np.asarray(Image.open(_skimage_file("grass.png")))
    second = ds.first(2)[1]  # crops interleaved: the second sample is grass's first crop
    assert torch.equal(second, torch.from_numpy(grass[:32, :32] / 256).float().expand(3, 32, 32))
    assert "grey repeated into 3 channels" not in " ".join(ds.transform)  # grey -> RGB is done by the cut
    assert ds.transform[0].startswith("crops of 3 texture photos")


def test_faces_and_photos_for_a_grey_model() -> None:
    faces = resolve_dataset("faces", Role.OOD, GREY, 10_000, 0)
    assert faces.size == 100 and faces.first(100).shape == (100, 1, 16, 16)
    x = faces.first(100)
    assert float(x.min()) >= -0.5 and float(x.max()) < 0.5  # 8-bit onto [-0.5, 0.5)
    photos = resolve_dataset("photos", Role.OOD, GREY, 50, 0)
    assert photos.size == 50 and "RGB to grey" not in " ".join(photos.transform)


def test_natural_sets_are_disjoint_from_the_training_patches() -> None:
    from innaudit.data import patches

    assert not {n for s in NATURAL.values() for _, n in s.images} & {
        f"{n}.png" for n in (*patches.IN_DISTRIBUTION, *patches.HELD_OUT)
    }
    seen = {hashlib.sha256(c.tobytes()).hexdigest() for s in ("train", "test", "ood") for c in patches.load_patches(s)}
    for name in NATURAL:
        crops = resolve_dataset(name, Role.OOD, RGB, 10_000, 0).first(10_000).numpy()
        assert not seen & {hashlib.sha256(c.tobytes()).hexdigest() for c in crops}


def test_the_default_battery_of_rgb_models_only() -> None:
    assert natural_battery(RGB)[0] == ("textures", "faces", "photos")
    assert natural_battery(GREY)[0] == ()
    assert natural_battery(DataDomain(shape=(3, 8, 8)))[0] == ()
    with pytest.raises(DataError, match=r"natural images; the model takes inputs of shape \(64,\)"):
        resolve_dataset("textures", Role.OOD, DataDomain(shape=(64,)), 10, 0)


def test_patches_glow_default_run_adds_them_with_their_provenance(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = invoke_cli(
        "run", ROOT / "checkpoints" / "patches-glow.pt", "--audit", "roundtrip", "--samples", 24,
        "--no-progress", "-o", f"json={out}",
    )  # fmt: skip
    assert result.code == 1, result.stderr  # the noise sets break it
    sets = {d["name"]: d for d in json.loads(out.read_text())["run"]["datasets"]}
    assert list(sets) == ["patches:test", "uniform", "gaussian", "rademacher", "textures", "faces", "photos"]
    assert sets["faces"]["origin"]["provenance"].startswith("scikit-image lfw_subset.npy")
    assert all(sets[n]["size"] == 24 for n in ("textures", "faces", "photos"))
    listed = invoke_cli("list").stdout
    assert "textures" in listed and "from: scikit-image sample images brick.png" in listed
    assert "matplotlib sample_data/grace_hopper.jpg" in listed
