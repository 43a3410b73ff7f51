"""32x32 colour patches of the sample images that scikit-image ships inside its wheel.

``train`` / ``test``: the non-overlapping 32x32 grid crops of ``astronaut``, ``coffee``,
``chelsea`` and ``rocket`` (every fifth crop, in the interleaved order below, is ``test``).
``ood``: the crops of ``hubble_deep_field``, ``retina`` and ``immunohistochemistry``, natural
images of another kind held out as an out-of-distribution set. The crops of the images are
interleaved (one of each image in turn), so the first ``n`` patches of a split cover all of its
images. Pixels are 8-bit: ``v`` maps to ``v / 256`` in ``[0, 1)``, the lower edge of its bin of
width ``1/256``; training adds ``U(0, 1/256)`` dequantization noise.

scikit-image is an optional extra (``pip install 'innaudit[images]'``); without it, asking for
``patches`` is a :class:`~innaudit.core.errors.DataError` that says how to install it.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import zip_longest

import numpy as np

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError

__all__ = ["LEVELS", "PATCHES_DOMAIN", "SIZE", "SPLITS", "load_patches"]

LEVELS = 256
SIZE = 32
PATCHES_DOMAIN = DataDomain(shape=(3, SIZE, SIZE), low=0.0, high=1.0, levels=LEVELS, name="patches")
SPLITS = ("train", "test", "ood")
IN_DISTRIBUTION = ("astronaut", "coffee", "chelsea", "rocket")
HELD_OUT = ("hubble_deep_field", "retina", "immunohistochemistry")


def _image(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise DataError(
            "the patches data set is cut from scikit-image's sample images, and "
            "scikit-image is not installed; install it with: pip install 'innaudit[images]' "
            "(or pip install scikit-image)"
        ) from None
    return np.asarray(getattr(data, name)(), dtype=np.uint8)


def _crops(image: np.ndarray) -> list[np.ndarray]:
    """Non-overlapping ``SIZE x SIZE`` crops, row-major, as ``(3, SIZE, SIZE)`` uint8."""
    rows, cols = image.shape[0] // SIZE, image.shape[1] // SIZE
    return [
        image[r * SIZE : (r + 1) * SIZE, c * SIZE : (c + 1) * SIZE, :3].transpose(2, 0, 1)
        for r in range(rows)
        for c in range(cols)
    ]


def _interleaved(names: tuple[str, ...]) -> np.ndarray:
    per_image = [_crops(_image(n)) for n in names]
    order = [c for group in zip_longest(*per_image) for c in group if c is not None]
    return np.stack(order)


@lru_cache(maxsize=4)
def _split(split: str) -> np.ndarray:
    if split == "ood":
        return _interleaved(HELD_OUT)
    crops = _interleaved(IN_DISTRIBUTION)
    index = np.arange(len(crops))
    return crops[index % 5 == 0] if split == "test" else crops[index % 5 != 0]


def load_patches(split: str = "test") -> np.ndarray:
    """Patches of ``split`` as float32 ``(N, 3, 32, 32)`` in ``[0, 1)`` (``v / 256``).

    Raises:
        DataError: ``split`` is unknown, or scikit-image is not installed.
    """
    if split not in SPLITS:
        raise DataError(f"patches:{split} is not a split; expected patches:train, patches:test or patches:ood")
    return _split(split).astype(np.float32) / LEVELS
