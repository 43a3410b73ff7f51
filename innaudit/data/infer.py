"""A data domain inferred from a data file, for a model that declares none.

The range and the quantization levels decide the attack's radius (half a bin) and the noise sets,
so a file's raw min/max (``[0.0012, 0.998]`` for dequantized images) is a poor domain. Rules:

- range: the smallest of ``[0, 1]``, ``[-0.5, 0.5]``, ``[-1, 1]`` that holds every value (the
  conventions of image flows, see Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347,
  and the Glow / RealNVP code bases); else the file's own min/max;
- levels: ``N`` when every value lies on the grid ``low + k (high - low) / (N - 1)``,
  ``k = 0..N-1`` (the smallest such ``N`` up to 4097, to within 1e-3 of a grid step); else the
  grid ``low + k (high - low) / N``; else continuous (``None``).

The result says how it was found (:attr:`Inferred.note`), and the report carries that note.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["STANDARD_RANGES", "Inferred", "infer_domain", "infer_levels", "snap_range"]

STANDARD_RANGES = ((0.0, 1.0), (-0.5, 0.5), (-1.0, 1.0))
_MAX_LEVELS = 4097
_GRID_TOL = 1e-3  # in grid steps


@dataclass(frozen=True)
class Inferred:
    """A range and levels found in data, and a sentence saying how."""

    low: float
    high: float
    levels: int | None
    note: str


def snap_range(low: float, high: float) -> tuple[float, float, bool]:
    """The smallest standard range holding ``[low, high]``; ``(low, high, False)`` when none does."""
    eps = 1e-6
    for a, b in STANDARD_RANGES:
        if low >= a - eps and high <= b + eps:
            return a, b, True
    return low, high, False


def _on_grid(u: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """For each candidate number of steps, whether every ``u * steps`` is an integer."""
    out = np.ones(len(steps), dtype=bool)
    for start in range(0, len(u), 256):
        scaled = u[start : start + 256, None] * steps[None, :]
        out &= (np.abs(scaled - np.round(scaled)) <= _GRID_TOL).all(0)
    return out


def infer_levels(values: np.ndarray, low: float, high: float) -> tuple[int | None, str]:
    """Levels of ``values`` in ``[low, high]`` and the grid they were found on (see module doc).

    With ``M`` the smallest number of steps such that every ``(v - low) / (high - low) * M`` is
    an integer: ``M + 1`` levels (grid ``k/M``) when the top of the range is taken or ``M`` is not
    a power of two, else ``M`` levels (``k/M``, ``k < M``: the 8-bit ``k/256`` convention).
    """
    u = np.unique((np.asarray(values, dtype=np.float64).ravel() - low) / (high - low))
    if u.size < 2 or u.size > _MAX_LEVELS:
        return None, ""
    steps = np.arange(max(1, u.size - 1), _MAX_LEVELS, dtype=np.float64)
    fits = steps[_on_grid(u, steps)]
    if not fits.size:
        return None, ""
    m = int(fits[0])
    top = abs(u.max() * m - m) <= _GRID_TOL
    if not top and m & (m - 1) == 0:
        return m, f"every value lies on the grid k/{m}, k < {m}"
    return m + 1, f"every value lies on the grid k/{m}"


def infer_domain(values: np.ndarray, source: str) -> Inferred:
    """Range and levels of the data ``values`` (any shape), read from ``source``."""
    raw_low, raw_high = float(np.min(values)), float(np.max(values))
    low, high, snapped = snap_range(raw_low, raw_high)
    if not high > low:
        high = low + 1.0
    levels, grid = infer_levels(values, low, high)
    parts = [f"inferred from data ({source}): values in [{raw_low:.4g}, {raw_high:.4g}]"]
    parts.append(f"range snapped to [{low:g}, {high:g}]" if snapped else "no standard range holds them")
    parts.append(f"{levels} levels ({grid})" if levels else "continuous (no level grid found)")
    parts.append("set --range LOW,HIGH and --levels N to override")
    return Inferred(low, high, levels, "; ".join(parts))
