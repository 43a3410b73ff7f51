"""Writers of data sets in the layouts their users hold them, at test time (as torchvision's own
tests fake CIFAR and SVHN): a CIFAR-10 python batch, a SVHN ``.mat``, an image folder, a Hugging
Face Parquet shard, a webdataset tar shard, a ``.t7`` tensor file; and hostile variants."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch


def png_bytes(hwc: np.ndarray, fmt: str = "PNG") -> bytes:
    """One ``(H, W, 3)`` uint8 image encoded by Pillow."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(hwc, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def cifar_batches(folder: Path, chw: np.ndarray, name: str = "test_batch") -> Path:
    """``folder/cifar-10-batches-py/NAME``: a dict pickled at protocol 2 as the CIFAR-10 python
    version is (``data`` (N, 3072) uint8 rows in CHW order, ``labels``, ``filenames``)."""
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    batch = {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(i % 10) for i in range(len(chw))],
        "data": chw.reshape(len(chw), 3072),
        "filenames": [f"img_{i:05d}.png" for i in range(len(chw))],
    }
    (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    return root


class _Payload:
    """Unpickling it runs ``os.system(command)``: the payload a hostile batch carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def hostile_pickle(marker: Path) -> bytes:
    """A CIFAR-looking dict whose ``labels`` entry creates ``marker`` when unpickled."""
    return pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": _Payload(f"touch {marker}")}, protocol=2)


def svhn_mat(path: Path, hwc: np.ndarray, compress: bool = False) -> Path:
    """SVHN's layout: ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1), written by scipy.io.savemat."""
    from scipy.io import savemat

    x = np.ascontiguousarray(np.moveaxis(hwc, 0, -1))
    savemat(path, {"X": x, "y": (np.arange(len(hwc)) % 10 + 1)[:, None].astype(np.uint8)}, do_compression=compress)
    return path


def image_folder(root: Path, hwc: np.ndarray, classes: int = 3, fmt: str = "PNG") -> Path:
    """An ImageFolder tree ``root/class_k/img_i.png`` with image ``i`` in class ``i % classes``."""
    suffix = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp"}[fmt]
    for i, image in enumerate(hwc):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img_{i:04d}{suffix}").write_bytes(png_bytes(image, fmt))
    return root


def parquet_shard(path: Path, images: list[bytes | None]) -> Path:
    """A Hugging Face ``datasets`` shard: ``image`` is a struct ``{bytes, path}``, plus ``label``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.array(
        [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    table = pa.table({"image": column, "label": pa.array([i % 10 for i in range(len(images))], pa.int64())})
    pq.write_table(table, path, row_group_size=16)
    return path


def tar_shard(path: Path, members: list[tuple[str, bytes]], links: tuple[str, ...] = ()) -> Path:
    """A webdataset shard: ``members`` as regular files in order, ``links`` as symlinks."""
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return path


def wds_members(hwc: np.ndarray) -> list[tuple[str, bytes]]:
    """``000000.png`` + ``000000.cls`` ... for each image, as webdataset writes a sample."""
    out: list[tuple[str, bytes]] = []
    for i, image in enumerate(hwc):
        out += [(f"{i:06d}.png", png_bytes(image)), (f"{i:06d}.cls", str(i % 10).encode())]
    return out


def t7_file(path: Path, chw: np.ndarray) -> Path:
    """The paper's DTD / Places ``.t7``: a tensor (N, 3, 32, 32) of pixel values 0..255, float."""
    torch.save(torch.from_numpy(chw.astype(np.float32)), path)
    return path


def png_bomb(size: int = 40_000) -> bytes:
    """A small PNG whose header declares ``size x size`` pixels (its IHDR rewritten, CRC fixed)."""
    data = bytearray(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", size, size)
    crc = zlib.crc32(bytes(data[start : start + 17])) & 0xFFFFFFFF
    data[start + 17 : start + 21] = struct.pack(">I", crc)
    return bytes(data)
