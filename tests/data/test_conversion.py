"""Conversion rules: layouts, channels, sizes and ranges converted by a recorded rule, or refused.

Known answers: an HWC uint8 image is the CHW float image after the transpose and ``k / 256``; a
``[-1, 1]`` array is the ``[0, 1]`` one after ``(x + 1) / 2``; a centre crop of a row ramp keeps
the middle rows; a flattened colour image is refused (its channel order cannot be known).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.data import Role, array_dataset
from tests.helpers import invoke_cli

ROOT = Path(__file__).resolve().parents[2]
GLOW = ROOT / "checkpoints" / "patches-glow.pt"
RGB = DataDomain(shape=(3, 32, 32), low=0.0, high=1.0, levels=256)
GREY = DataDomain(shape=(1, 32, 32), low=0.0, high=1.0, levels=256)


def _pixels(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _set(array: np.ndarray, domain: DataDomain = RGB, role: Role = Role.IN_DISTRIBUTION):
    return array_dataset("x", array, role, domain, 100)


def test_hwc_uint8_is_transposed_and_scaled_to_the_lower_bin_edge() -> None:
    hwc = _pixels()
    ds = _set(hwc)
    expected = torch.from_numpy(hwc.transpose(0, 3, 1, 2).astype(np.float32) / 256)
    assert torch.equal(ds.first(6), expected)
    assert ds.transform[0] == "transposed HWC -> CHW" and "k / 256" in ds.transform[1]


@pytest.mark.parametrize(
    ("levels", "expected"),
    [(None, lambda k: k / 255), (32, lambda k: np.floor(k * 32 / 256) / 32)],
)
def test_8bit_pixels_follow_the_model_levels(levels: int | None, expected) -> None:
    chw = _pixels().transpose(0, 3, 1, 2)
    ds = _set(np.ascontiguousarray(chw), DataDomain(shape=(3, 32, 32), levels=levels))
    assert torch.allclose(ds.first(6), torch.from_numpy(expected(chw.astype(np.float64)).astype(np.float32)))


def test_a_standard_range_is_mapped_linearly() -> None:
    x = np.random.default_rng(1).random((4, 3, 32, 32), dtype=np.float32)
    ds = _set(2 * x - 1)
    assert torch.allclose(ds.first(4), torch.from_numpy(x), atol=1e-7)
    low, high = float((2 * x - 1).min()), float((2 * x - 1).max())
    assert ds.transform == (f"values in [{low:.4g}, {high:.4g}]: rescaled from [-1, 1] to the model's range [0, 1]",)
    glow = DataDomain(shape=(3, 32, 32), low=-0.5, high=0.5)
    assert torch.allclose(_set(x, glow).first(4), torch.from_numpy(x - 0.5), atol=1e-7)
    assert _set(x).transform == ()  # in range: used as stored


def test_out_of_range_data_are_refused_in_distribution_and_noted_ood() -> None:
    far = np.full((3, 3, 32, 32), -7.5, dtype=np.float32)  # in no standard range
    with pytest.raises(DataError, match=r"outside the model's range \[0, 1\].*--range"):
        _set(far)
    ood = _set(far, role=Role.OOD)
    assert torch.all(ood.first(3) == -7.5) and "used as given" in ood.transform[0]


def test_a_model_without_a_declared_range_takes_values_as_given() -> None:
    assumed = DataDomain(shape=(3, 32, 32), assumed_range=True)
    ds = _set(np.full((2, 3, 32, 32), -3.0, dtype=np.float32), assumed)
    assert torch.all(ds.first(2) == -3.0) and ds.transform == () and "declares no data range" in ds.note


def test_channels_grey_to_rgb_and_rgb_to_luma() -> None:
    grey = np.random.default_rng(2).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    rgb = _set(grey).first(3)  # (N, H, W): one channel, repeated
    assert torch.equal(rgb[:, 0], rgb[:, 2]) and torch.equal(rgb[:, 1], torch.from_numpy(grey / 256).float())
    hwc = _pixels(2)
    luma = _set(hwc, GREY).first(2)[:, 0] * 256
    from PIL import Image

    pil = np.stack([np.asarray(Image.fromarray(h, "RGB").convert("L")) for h in hwc]).astype(np.float32)
    assert torch.equal(luma, torch.from_numpy(pil))  # Pillow's own ITU-R 601-2 luma


def test_another_size_is_centre_cropped_by_the_documented_offsets() -> None:
    ramp = np.repeat(np.arange(40, dtype=np.uint8)[None, :, None, None], 32, axis=2).repeat(3, axis=3)
    ds = _set(ramp)  # 40x32: scale max(32/40, 32/32) = 1, rows (40 - 32) // 2 = 4 .. 35 kept
    assert torch.equal(ds.first(1)[0, 0, :, 0] * 256, torch.arange(4, 36, dtype=torch.float32))
    assert ds.transform[1] == "centre-cropped 40x32 to 32x32"
    big = np.full((1, 64, 64, 3), 200, dtype=np.uint8)  # a constant image stays constant
    assert torch.all(_set(big).first(1) == 200 / 256)


@pytest.mark.parametrize(
    ("shape", "needle"),
    [((2, 3072), "flattened colour image"), ((2, 3, 3, 3), "cannot feed|can be told apart|values per sample")],
)
def test_what_cannot_be_converted_is_refused(shape: tuple[int, ...], needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        _set(np.zeros(shape, dtype=np.float32))


def test_a_flat_one_channel_image_is_unflattened_row_major() -> None:
    flat = np.arange(2 * 1024, dtype=np.float32).reshape(2, 1024) / 4096
    ds = _set(flat, GREY)
    assert torch.equal(ds.first(2), torch.from_numpy(flat.reshape(2, 1, 32, 32)))
    assert ds.transform == ("unflattened row-major: (1024,) -> (1, 32, 32) (one channel)",)


def _audit(tmp_path: Path, name: str, array: np.ndarray) -> tuple[int, dict, str]:
    np.save(tmp_path / f"{name}.npy", array)
    out = tmp_path / f"{name}.json"
    result = invoke_cli(
        "run", GLOW, "--data", tmp_path / f"{name}.npy", "--ood", "constant:0.5", "--audit", "roundtrip",
        "--samples", 48, "--no-progress", "-o", f"json={out}",
    )  # fmt: skip
    return result.code, json.loads(out.read_text()), result.stdout


def test_patches_glow_gives_the_same_verdict_on_cifar_layout_uint8_and_minus_one_one_arrays(tmp_path: Path) -> None:
    """The must-show case: the CIFAR layout (N, 32, 32, 3) uint8 and a [-1, 1] array of the same
    test patches are converted by a recorded rule and give the CHW float array's verdict."""
    pytest.importorskip("skimage")
    from innaudit.data.patches import load_patches

    x = load_patches("test")[:48]
    base = _audit(tmp_path, "chw", x)
    runs = {
        "hwc": _audit(tmp_path, "hwc", np.round(x * 256).astype(np.uint8).transpose(0, 2, 3, 1)),
        "pm1": _audit(tmp_path, "pm1", 2 * x - 1),
    }
    metrics = base[1]["audits"][0]["results"][0]["metrics"]
    assert base[0] == 0 and metrics["nonfinite_fraction"] == 0.0
    for name, (code, report, stdout) in runs.items():
        assert code == base[0]
        assert report["audits"][0]["results"][0]["metrics"] == metrics  # the very same inputs
        transform = report["run"]["datasets"][0]["transform"]
        assert transform[0] == ("transposed HWC -> CHW" if name == "hwc" else transform[0])
        assert any("k / 256" in t or "rescaled from [-1, 1]" in t for t in transform)
        assert f"data set '{name}' was converted" in stdout
    assert "transform" not in base[1]["run"]["datasets"][0]
