"""The 8x8 handwritten digits (UCI / scikit-learn copy), shipped with the package.

1797 images with integer pixels 0..16 (17 grey levels). innaudit maps a pixel value ``v`` to
``v / 17`` in ``[0, 1)``, the lower edge of its quantization bin of width ``1/17``; training adds
``U(0, 1/17)`` dequantization noise. The split is fixed: every fifth image (index % 5 == 0) is
``test`` (360 images), the rest ``train`` (1437). See ``ATTRIBUTION.md`` beside this file.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

import numpy as np

from innaudit.core.domain import DataDomain

__all__ = ["DIGITS_DOMAIN", "LEVELS", "load_digits"]

LEVELS = 17
DIGITS_DOMAIN = DataDomain(shape=(1, 8, 8), low=0.0, high=1.0, levels=LEVELS, name="digits")
SPLITS = ("train", "test", "all")


@lru_cache(maxsize=1)
def _raw() -> np.ndarray:
    data = resources.files("innaudit.data").joinpath("digits.csv.gz").read_bytes()
    return np.loadtxt(gzip.decompress(data).decode().splitlines(), delimiter=",", dtype=np.int64)


def load_digits(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 ``(N, 1, 8, 8)`` in ``[0, 1)`` and labels ``(N,)`` for ``split``.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
    """
    if split not in SPLITS:
        raise ValueError(f"digits split {split!r} is unknown; expected one of {', '.join(SPLITS)}")
    raw = _raw()
    index = np.arange(len(raw))
    keep = {"train": index % 5 != 0, "test": index % 5 == 0, "all": index >= 0}[split]
    pixels = raw[keep, :64].astype(np.float32) / LEVELS
    return pixels.reshape(-1, 1, 8, 8), raw[keep, 64].copy()
