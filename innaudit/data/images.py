"""Decoding image files with Pillow, safely, and the image-folder reader (``folder:DIR``).

Decoding is the one place untrusted image bytes meet a C decoder, so every image passes the
same gate (:func:`decode_image`):

- at most :data:`MAX_IMAGE_BYTES` bytes are read per image;
- only the PNG, JPEG, WebP, BMP and GIF decoders are enabled (``Image.open(formats=...)``), so
  no file can reach Pillow's other plugins (EPS, for one, runs Ghostscript);
- the size in the header is checked before any pixel is decoded: more than
  :data:`MAX_PIXELS` pixels is refused as a decompression bomb (Pillow's own warning is an
  error too);
- a truncated or corrupt image is refused (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off).

Each refusal is a :class:`~innaudit.core.errors.DataError` naming the file. An image that
decodes is converted to the model's channels and size by
:func:`innaudit.data.convert.fit_image`.

The folder reader walks ``DIR`` recursively (hidden entries and symlinked folders skipped,
``.png .jpg .jpeg .webp .bmp .gif`` in any case). Files are sorted by name inside each folder,
and the top-level sub-folders (an ImageFolder's classes) are interleaved, one file of each in
turn, so the first ``n`` images cover every class. Only the first ``--samples`` images are
opened; the others are only listed.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError, clean_text
from innaudit.data.convert import fit_image, image_shape, resized_size

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "DecodedImages",
    "decode_image",
    "folder_images",
    "image_target",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MAX_IMAGE_BYTES = 64 << 20
"""Most bytes one image file (or one Parquet / tar image value) may hold."""
MAX_PIXELS = 1 << 26
"""Most pixels (width x height, about 8192 x 8192) an image may declare."""
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


def image_target(domain: DataDomain, spec: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image model; a clear error for a model that takes no images."""
    shape = image_shape(domain)
    if shape is None or shape[0] == 4:
        raise DataError(
            f"{spec} holds images, but the model takes inputs of shape {tuple(domain.shape)}; "
            "image sets feed models of shape (C, H, W) with C = 1 or 3"
        )
    return shape


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "reading images needs Pillow, which is not installed; install it with: "
            "pip install 'innaudit[formats]' (or pip install pillow)"
        ) from None
    return Image


def decode_image(data: bytes, where: str, target: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The image in ``data`` as ``(H, W, C)`` uint8 for ``target = (C, H, W)``, and its size
    ``(h, w)`` as stored.

    Raises:
        DataError: too large, not an image of an enabled format, truncated or corrupt.
    """
    image_module = _pil()
    if len(data) > MAX_IMAGE_BYTES:
        raise DataError(f"{where} holds {len(data)} bytes; an image may hold at most {MAX_IMAGE_BYTES >> 20} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", image_module.DecompressionBombWarning)
            image = image_module.open(io.BytesIO(data), formats=_FORMATS)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise DataError(
                    f"{where} declares {width}x{height} pixels, more than the {MAX_PIXELS} an image may have; "
                    "refused as a possible decompression bomb"
                )
            image.load()
            return fit_image(image, target[0], target[1], target[2]), (height, width)
    except DataError:
        raise
    except (image_module.DecompressionBombError, image_module.DecompressionBombWarning) as exc:
        raise DataError(f"{where} is refused as a decompression bomb ({clean_text(exc, 200)})") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise DataError(
            f"{where} cannot be decoded as a PNG, JPEG, WebP, BMP or GIF image "
            f"({clean_text(f'{type(exc).__name__}: {exc}', 200)})"
        ) from None


class DecodedImages:
    """Images decoded to one size, stacked, with what the report says about them."""

    def __init__(self, target: tuple[int, int, int]) -> None:
        self.target = target
        self.images: list[np.ndarray] = []
        self.sizes: list[tuple[int, int]] = []

    def add(self, data: bytes, where: str) -> None:
        """Decode one image and keep it."""
        image, size = decode_image(data, where, self.target)
        self.images.append(image)
        self.sizes.append(size)

    def array(self, what: str) -> np.ndarray:
        """``(n, H, W, C)`` uint8; an error when nothing was decoded."""
        if not self.images:
            raise DataError(f"{what} holds no PNG, JPEG, WebP, BMP or GIF image")
        return np.stack(self.images)

    def transform(self) -> tuple[str, ...]:
        """The reader's steps: the decoding and, when sizes differ, the resize summary."""
        c, h, w = self.target
        steps = [f"decoded with Pillow to {'RGB' if c == 3 else 'grey (L)'} 8-bit"]
        other = [s for s in self.sizes if s != (h, w)]
        if other:
            cropped = sum(1 for s in other if resized_size(*s, h, w) != (h, w))
            steps.append(
                f"{len(other)} of {len(self.sizes)} images resized (sizes {_span(other)}; shorter side to fit "
                f"{h}x{w}, bilinear), {cropped} of them centre-cropped to {h}x{w}"
            )
        return tuple(steps)


def _span(sizes: list[tuple[int, int]]) -> str:
    smallest, largest = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
    if smallest == largest:
        return f"{smallest[0]}x{smallest[1]}"
    return f"{smallest[0]}x{smallest[1]} to {largest[0]}x{largest[1]}"


def read_limited(path: Path, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """At most ``limit`` bytes of a regular file; an error naming it when it holds more."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{clean_text(path, 300)} holds more than {limit >> 20} MiB; an image may hold at most that")
    return data


def _entries(folder: Path) -> tuple[list[str], list[str]]:
    """The names of the image files and of the sub-folders of ``folder``, each sorted (names,
    not paths: a folder of 100,000 images costs a few MB to list)."""
    files, folders = [], []
    try:
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                elif entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                    files.append(entry.name)
    except OSError as exc:
        raise DataError(f"folder {clean_text(folder, 300)} cannot be listed ({clean_text(exc.strerror, 80)})") from None
    files.sort()
    folders.sort()
    return files, folders


def _walk(folder: Path) -> Iterator[Path]:
    """Every image file under ``folder``, depth first, sorted."""
    files, folders = _entries(folder)
    yield from (folder / name for name in files)
    for sub in folders:
        yield from _walk(folder / sub)


def _interleaved(root: Path) -> Iterator[Path]:
    """The root's own images, then one image of each top-level sub-folder in turn."""
    files, folders = _entries(root)
    yield from (root / name for name in files)
    for group in zip_longest(*(_walk(root / sub) for sub in folders)):
        yield from (path for path in group if path is not None)


def folder_images(
    root: Path, limit: int, domain: DataDomain, spec: str
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """The first ``limit`` images under ``root`` (module docstring), decoded to the model's
    shape: ``(n, H, W, C)`` uint8, the report's origin, and the reader's steps."""
    target = image_target(domain, spec)
    decoded = DecodedImages(target)
    first: str | None = None
    last = ""
    for path in _interleaved(root):
        if len(decoded.images) >= limit:
            break
        decoded.add(read_limited(path), clean_text(path, 300))
        relative = str(path.relative_to(root))
        first = first or relative
        last = relative
    array = decoded.array(f"folder {clean_text(root, 300)}")
    origin = {"format": "folder", "path": str(root), "files_read": len(array), "first": first, "last": last}
    return array, origin, decoded.transform()
