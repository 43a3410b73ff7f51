"""Every data format, written in its real layout at test time and audited against patches-glow.

Lossless formats of the same 48 test patches give the CHW float array's verdict and metrics; a
hostile member in each format is refused with exit 2, one line naming the file, and nothing in
it runs (the pickle payloads would create a marker file).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.data import writers
from tests.helpers import invoke_cli

pytest.importorskip("skimage")
pytest.importorskip("PIL")

ROOT = Path(__file__).resolve().parents[2]
GLOW = ROOT / "checkpoints" / "patches-glow.pt"
N = 48


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """The first 48 test patches as 8-bit CHW pixels."""
    from innaudit.data.patches import load_patches

    return np.round(load_patches("test")[:N] * 256).astype(np.uint8)


def audit(folder: Path, spec: object, *extra: object) -> tuple[int, dict[str, Any] | None, str]:
    out = folder / "report.json"
    out.unlink(missing_ok=True)
    result = invoke_cli(
        "run", GLOW, "--data", spec, "--ood", "constant:0.5", "--audit", "roundtrip", "--samples", N,
        "--no-progress", "-o", f"json={out}", *extra,
    )  # fmt: skip
    report = json.loads(out.read_text()) if out.exists() else None
    return result.code, report, result.stderr_lines[-1] if result.stderr_lines else ""


@pytest.fixture(scope="module")
def reference(pixels: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("ref")
    np.save(folder / "x.npy", pixels.astype(np.float32) / 256)
    code, report, _ = audit(folder, folder / "x.npy")
    assert code == 0 and report is not None
    return report["audits"][0]["results"][0]["metrics"]


def close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-9)
    return a == b


def same_verdict(tmp_path: Path, spec: object, reference: dict[str, Any], fmt: str) -> dict[str, Any]:
    code, report, last = audit(tmp_path, spec)
    assert code == 0 and report is not None, last
    described = report["run"]["datasets"][0]
    assert described["origin"]["format"] == fmt and described["size"] == N
    assert close(report["audits"][0]["results"][0]["metrics"], reference)
    return described


def refused(tmp_path: Path, spec: object, needle: str, marker: Path | None = None) -> None:
    code, report, last = audit(tmp_path, spec)
    assert code == 2 and report is None
    assert needle in last and "Traceback" not in last
    if marker is not None:
        assert not marker.exists()


def test_cifar_python_batches(tmp_path: Path, pixels: np.ndarray, reference: dict[str, Any]) -> None:
    root = writers.cifar_batches(tmp_path, pixels)
    described = same_verdict(tmp_path, root, reference, "cifar-python")
    assert described["origin"]["files_read"] == ["test_batch"]
    assert "CHW" in described["transform"][0]
    marker = tmp_path / "ran"
    (root / "test_batch").write_bytes(writers.hostile_pickle(marker))
    refused(tmp_path, f"cifar:{root}", "global posix.system", marker)


def test_svhn_mat_files_plain_and_compressed(tmp_path: Path, pixels: np.ndarray, reference: dict[str, Any]) -> None:
    from scipy.io import loadmat

    hwc = pixels.transpose(0, 2, 3, 1)
    for compress in (False, True):
        path = writers.svhn_mat(tmp_path / f"test_32x32_{compress}.mat", hwc, compress)
        described = same_verdict(tmp_path, path, reference, "mat-v5")
        assert described["origin"]["dims"] == [32, 32, 3, N]
        from innaudit.data.matlab import read_mat

        assert np.array_equal(read_mat(path, None, 5)[0], np.moveaxis(loadmat(path)["X"], -1, 0)[:5])
    path = tmp_path / "test_32x32_False.mat"
    data = bytearray(path.read_bytes())
    dims = data.index(np.array([32, 32, 3, N], "<i4").tobytes())
    data[dims + 12 : dims + 16] = np.array([10**6], "<i4").tobytes()  # dims claim a million samples
    (tmp_path / "lie.mat").write_bytes(bytes(data))
    refused(tmp_path, tmp_path / "lie.mat", "declares")
    (tmp_path / "cut.mat").write_bytes(path.read_bytes()[:4000])
    refused(tmp_path, tmp_path / "cut.mat", "truncated")


def test_image_folder_png_and_jpeg(tmp_path: Path, pixels: np.ndarray, reference: dict[str, Any]) -> None:
    hwc = pixels.transpose(0, 2, 3, 1)
    root = writers.image_folder(tmp_path / "png", hwc)
    described = same_verdict(tmp_path, f"folder:{root}", reference, "folder")
    assert described["origin"]["files_read"] == N and described["origin"]["first"] == "class_0/img_0000.png"
    assert described["origin"]["last"] == "class_2/img_0047.png"  # classes interleaved
    jpeg = writers.image_folder(tmp_path / "jpg", hwc, fmt="JPEG")
    code, report, _ = audit(tmp_path, jpeg)
    assert code == 0 and report is not None and report["run"]["datasets"][0]["size"] == N
    (root / "class_1" / "img_0001.png").write_bytes(writers.png_bomb())
    refused(tmp_path, root, "decompression bomb")
    (root / "class_1" / "img_0001.png").write_bytes(writers.png_bytes(hwc[1])[:300])
    refused(tmp_path, root, "img_0001.png cannot be decoded")


def test_parquet_shard_with_image_bytes(tmp_path: Path, pixels: np.ndarray, reference: dict[str, Any]) -> None:
    images = [writers.png_bytes(h) for h in pixels.transpose(0, 2, 3, 1)]
    shard = writers.parquet_shard(tmp_path / "train-00000-of-00001.parquet", images)
    described = same_verdict(tmp_path, shard, reference, "parquet")
    assert described["origin"]["rows_read"] == N
    assert same_verdict(tmp_path, f"{shard}:image", reference, "parquet")["size"] == N
    writers.parquet_shard(tmp_path / "bomb.parquet", [images[0], writers.png_bomb()])
    refused(tmp_path, tmp_path / "bomb.parquet", "bomb.parquet row 1 is refused as a decompression bomb")
    writers.parquet_shard(tmp_path / "bypath.parquet", [None])
    refused(tmp_path, tmp_path / "bypath.parquet", "no image bytes")
    (tmp_path / "cut.parquet").write_bytes(shard.read_bytes()[:2000])
    refused(tmp_path, tmp_path / "cut.parquet", "not a readable Parquet shard")


def test_webdataset_tar_shard(tmp_path: Path, pixels: np.ndarray, reference: dict[str, Any]) -> None:
    members = writers.wds_members(pixels.transpose(0, 2, 3, 1))
    shard = writers.tar_shard(tmp_path / "shard-000000.tar", members)
    assert same_verdict(tmp_path, shard, reference, "tar")["origin"]["images_read"] == N
    marker = tmp_path / "ran"
    for name, needle in (("000001.pyd", "pickle"), ("../000001.png", "outside the shard")):
        writers.tar_shard(tmp_path / "bad.tar", [members[0], (name, writers.hostile_pickle(marker)), *members[2:]])
        refused(tmp_path, tmp_path / "bad.tar", needle, marker)
    writers.tar_shard(tmp_path / "link.tar", members[:2], links=("000002.png",))
    refused(tmp_path, tmp_path / "link.tar", "link, device or FIFO")
    (tmp_path / "cut.tar").write_bytes(shard.read_bytes()[:5000])
    refused(tmp_path, tmp_path / "cut.tar", "cut.tar")


def test_t7_tensor_of_pixel_values(tmp_path: Path, pixels: np.ndarray, reference: dict[str, Any]) -> None:
    """The paper's DTD / Places files: tensors of 0..255 floats, read weights-only."""
    described = same_verdict(tmp_path, writers.t7_file(tmp_path / "dtd.t7", pixels), reference, "t7")
    assert any("8-bit pixels" in t for t in described["transform"])
    marker = tmp_path / "ran"
    import torch

    torch.save({"x": writers._Payload(f"touch {marker}")}, tmp_path / "evil.t7")
    refused(tmp_path, tmp_path / "evil.t7", "evil.t7", marker)


def test_a_missing_reader_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    real = builtins.__import__

    def no_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    refused(tmp_path, tmp_path / "x.parquet", "pip install 'innaudit[formats]'")
