"""Natural-image OOD sets that ship offline, cut to the model's image shape.

The paper's OOD table (Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, table 2)
tries a CIFAR-10 Glow on SVHN, textures (DTD), Places and tinyImageNet; none of them can be
downloaded at run time here, so these sets are built from images inside wheels innaudit already
depends on (no download):

==========  ===================================================  ==============================
set         images                                               stands in for
==========  ===================================================  ==============================
textures    scikit-image ``brick``, ``grass``, ``gravel``         DTD (textures)
            (512x512 grey, CC0)
faces       scikit-image ``lfw_subset``: its 100 faces (25x25     CelebA / faces
            grey, from Labeled Faces in the Wild)
photos      scikit-image ``motorcycle_left`` (Middlebury 2014     Places / tinyImageNet (scenes)
            stereo, RGB), ``camera`` (grey, CC0);
            matplotlib ``grace_hopper.jpg`` (RGB, public domain)
==========  ===================================================  ==============================

None of them is among the images ``patches:train`` / ``patches:test`` are cut from
(``astronaut``, ``coffee``, ``chelsea``, ``rocket``) or ``patches:ood``'s (``hubble_deep_field``,
``retina``, ``immunohistochemistry``), so for the shipped image checkpoints they are
out-of-distribution by construction.

Each image is cut into the non-overlapping ``H x W`` crops of the model's shape, row-major (an
image smaller than ``H x W`` is first resized to cover it, :mod:`innaudit.data.convert`); the
crops of the images are interleaved, one of each image in turn, so the first ``n`` cover all of
them. ``faces`` resizes each 25x25 face to ``H x W`` instead. Grey images feed a 3-channel model
by repeating the channel. Pixels are 8-bit and go through the conversion rules like any 8-bit
data (``k / 256`` for a 256-level ``[0, 1]`` model). For a model on natural images (3 channels,
``H, W >= 16``) the default OOD battery adds these sets beside the noise sets.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest
from pathlib import Path

import numpy as np

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.data.arrayset import array_dataset
from innaudit.data.convert import image_shape, resize_image, to_channels
from innaudit.data.dataset import Dataset, Role

__all__ = ["DEFAULT_NATURAL", "NATURAL", "NaturalSet", "natural_battery", "natural_dataset"]


@dataclass(frozen=True)
class NaturalSet:
    """One shipped natural-image set: its images and where they come from."""

    name: str
    summary: str
    provenance: str
    images: tuple[tuple[str, str], ...]  # (package, file inside the package's data folder)
    whole: bool = False  # resize each image to H x W instead of cutting crops


_SKIMAGE, _MPL = "scikit-image", "matplotlib"
NATURAL: dict[str, NaturalSet] = {
    s.name: s
    for s in (
        NaturalSet(
            "textures",
            "crops of 3 texture photos (brick, grass, gravel), a DTD stand-in",
            "scikit-image sample images brick.png, grass.png, gravel.png (skimage/data; CC0Textures and "
            "DeviantArt, CC0 licence)",
            ((_SKIMAGE, "brick.png"), (_SKIMAGE, "grass.png"), (_SKIMAGE, "gravel.png")),
        ),
        NaturalSet(
            "faces",
            "100 face crops of Labeled Faces in the Wild, resized, a CelebA stand-in",
            "scikit-image lfw_subset.npy, its first 100 images (faces; Huang et al., Labeled Faces in the Wild)",
            ((_SKIMAGE, "lfw_subset.npy"),),
            whole=True,
        ),
        NaturalSet(
            "photos",
            "crops of 3 photos (a motorcycle in a room, a photographer outdoors, a portrait), a Places stand-in",
            "scikit-image motorcycle_left.png (Middlebury 2014 stereo), camera.png (CC0); matplotlib "
            "sample_data/grace_hopper.jpg (US Navy, public domain)",
            ((_SKIMAGE, "motorcycle_left.png"), (_SKIMAGE, "camera.png"), (_MPL, "grace_hopper.jpg")),
        ),
    )
}
DEFAULT_NATURAL = tuple(NATURAL)


def _folder(package: str) -> Path | None:
    module = "skimage" if package == _SKIMAGE else "matplotlib"
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations)))
    return root / "data" if package == _SKIMAGE else root / "mpl-data" / "sample_data"


def available(entry: NaturalSet) -> bool:
    """Whether every package the set's images come from is installed."""
    return all(_folder(package) is not None for package, _ in entry.images)


def _missing(entry: NaturalSet) -> DataError:
    return DataError(
        f"the {entry.name} set is cut from scikit-image's sample images, and scikit-image is not "
        "installed; install it with: pip install 'innaudit[images]' (or pip install scikit-image)"
    )


@lru_cache(maxsize=16)
def _source(package: str, name: str) -> tuple[np.ndarray, ...]:
    """The images of one file as uint8 ``(h, w, c)`` arrays (``lfw_subset``: its 100 faces)."""
    folder = _folder(package)
    if folder is None:
        raise DataError(f"{name} ships with {package}, which is not installed")
    if name.endswith(".npy"):
        faces = np.load(folder / name, allow_pickle=False)[:100]
        return tuple(np.round(f * 255).astype(np.uint8)[..., None] for f in faces)
    from PIL import Image

    with Image.open(folder / name) as image:
        array = np.asarray(image.convert("L" if image.mode in ("L", "I", "I;16") else "RGB"), dtype=np.uint8)
    return (array[..., None] if array.ndim == 2 else array,)


def _crops(image: np.ndarray, height: int, width: int) -> list[np.ndarray]:
    if image.shape[0] < height or image.shape[1] < width:
        image = resize_image(image, max(height, image.shape[0]), max(width, image.shape[1]))
    rows, cols = image.shape[0] // height, image.shape[1] // width
    return [image[r * height : (r + 1) * height, c * width : (c + 1) * width] for r in range(rows) for c in range(cols)]


def _cut(entry: NaturalSet, channels: int, height: int, width: int) -> np.ndarray:
    """The set's samples as ``(n, H, W, C)`` uint8 (module docstring)."""
    groups: list[list[np.ndarray]] = []
    for package, name in entry.images:
        images = _source(package, name)
        if entry.whole:
            groups.extend([resize_image(i, height, width)] for i in images)
        else:
            groups.append([c for i in images for c in _crops(i, height, width)])
    order = [c for group in zip_longest(*groups) for c in group if c is not None]
    return np.stack([to_channels(c[None], channels)[0] for c in order])


def natural_dataset(name: str, spec: str, role: Role, domain: DataDomain, samples: int) -> Dataset:
    """The natural set ``spec`` names (``textures``, ``faces``, ``photos``) for ``domain``."""
    entry = NATURAL[spec.partition(":")[0]]
    if spec != entry.name:
        raise DataError(f"{spec!r}: the natural set {entry.name} takes no argument")
    shape = image_shape(domain)
    if shape is None or shape[0] == 4 or min(shape[1:]) < 8:
        raise DataError(
            f"{entry.name} is a set of natural images; the model takes inputs of shape {tuple(domain.shape)} "
            "(expected (C, H, W) with C = 1 or 3 and H, W >= 8)"
        )
    if not available(entry):
        raise _missing(entry)
    channels, height, width = shape
    array = _cut(entry, channels, height, width)[:samples]
    how = "each resized (bilinear) to" if entry.whole else "non-overlapping crops of"
    origin = {"format": "natural", "provenance": entry.provenance, "images": [n for _, n in entry.images]}
    step = f"{entry.summary}: {how} {height}x{width}, images interleaved"
    return array_dataset(
        name,
        array,
        role,
        domain,
        samples,
        spec=spec,
        source=f"natural set {entry.name}",
        origin=origin,
        layout="hwc",
        transform=(step,),
    )


def natural_battery(domain: DataDomain) -> tuple[tuple[str, ...], str | None]:
    """The natural sets the default OOD battery adds for ``domain`` (3 channels, ``H, W >= 16``),
    and a sentence when some are left out because their package is missing."""
    shape = image_shape(domain)
    if shape is None or shape[0] != 3 or min(shape[1:]) < 16:
        return (), None
    sets = tuple(n for n in DEFAULT_NATURAL if available(NATURAL[n]))
    left = [n for n in DEFAULT_NATURAL if n not in sets]
    note = (
        f"natural-image OOD set(s) {', '.join(left)} left out of the default battery: scikit-image is not "
        "installed (pip install 'innaudit[images]')"
        if left
        else None
    )
    return sets, note
