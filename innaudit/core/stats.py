"""Per-sample error accumulation and summaries that count non-finite values instead of crashing.

Reductions propagate NaN (``max([1, nan]) == nan``), so every summary is taken over the finite
samples only and the non-finite ones are counted separately. The reference
code counted Inf but not NaN; here NaN and Inf are counted together as non-finite, and apart.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ErrorAccumulator",
    "column_nan_max",
    "min_median_max",
    "nan_max",
    "nan_min",
    "per_sample_norm",
    "relative_error",
    "round_significant",
    "significant",
    "summarize",
    "where_error_enters",
]


def per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of each sample over all its elements, computed in float64: shape ``(batch,)``."""
    return torch.linalg.vector_norm(t.reshape(len(t), -1).double(), dim=1)


def relative_error(got: Tensor, want: Tensor, floor: float) -> Tensor:
    """``||got - want||_2 / max(||want||_2, floor)`` per sample, in float64: shape ``(batch,)``.

    The floor keeps an all-zero (or tiny) reference from dividing by zero; non-finite values
    propagate (callers mark them as they count them).
    """
    return per_sample_norm(got - want) / per_sample_norm(want).clamp_min(floor)


def _rows(mask: Tensor) -> Tensor:
    return mask.reshape(len(mask), -1).any(dim=1)


def _host(part: Tensor | np.ndarray) -> np.ndarray:
    return part.cpu().numpy() if isinstance(part, Tensor) else part


def _joined(parts: Sequence[Tensor | np.ndarray], dtype: type) -> np.ndarray:
    """The batches' per-sample values as one host array: device batches joined there, then
    copied once."""
    if not parts:
        return np.zeros(0, dtype=dtype)
    if all(isinstance(p, Tensor) for p in parts):
        return torch.cat([p for p in parts if isinstance(p, Tensor)]).cpu().numpy()
    return np.concatenate([_host(p) for p in parts])


def summarize(values: np.ndarray) -> dict[str, float]:
    """``median``, ``p99``, ``max``, ``mean`` of the finite values (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"median": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    return {
        "median": float(np.median(finite)),
        "p99": float(np.quantile(finite, 0.99)),
        "max": float(finite.max()),
        "mean": float(finite.mean()),
    }


def min_median_max(values: np.ndarray, inf_counts: bool = False) -> dict[str, float]:
    """``{min, median, max}`` over the finite values, or with ``inf_counts`` over every value
    that is not NaN (a singular sample then makes ``max`` inf); NaN when nothing is left."""
    kept = values[~np.isnan(values)] if inf_counts else values[np.isfinite(values)]
    if kept.size == 0:
        return {"min": math.nan, "median": math.nan, "max": math.nan}
    return {"min": float(kept.min()), "median": float(np.median(kept)), "max": float(kept.max())}


def nan_max(values: np.ndarray) -> float:
    """Largest value, ``inf`` counted, NaN ignored (NaN when there is nothing)."""
    kept = values[~np.isnan(values)]
    return float(kept.max()) if kept.size else math.nan


def nan_min(values: np.ndarray) -> float:
    """Smallest value, ``-inf`` counted, NaN ignored (NaN when there is nothing)."""
    kept = values[~np.isnan(values)]
    return float(kept.min()) if kept.size else math.nan


def column_nan_max(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Per column of equal-length ``rows``, the largest value with NaN ignored (NaN for a column
    of NaN only, without the warning NumPy gives for it)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
        return np.nanmax(rows, axis=0)


def where_error_enters(errors: Sequence[np.ndarray | float | None], limit: float) -> int:
    """Walking back from the output (last block first), the index of the first block whose
    error (a number, or per-sample values) is above ``limit`` or not finite, NaN counted as off:
    where a reconstruction error enters the chain of inverses. -1 when none is (a block without
    values, None or empty, is passed over)."""
    for k in range(len(errors) - 1, -1, -1):
        err = errors[k]
        if err is not None and np.size(err) and not (np.asarray(err) <= limit).all():
            return k
    return -1


def round_significant(value: float, digits: int = 5) -> float:
    """``value`` rounded to ``digits`` significant digits (NaN and inf kept as they are)."""
    return float(f"{value:.{digits}g}") if math.isfinite(value) else float(value)


def significant(values: Iterable[float], digits: int = 5) -> list[float]:
    """Each value rounded to ``digits`` significant digits, for a report's per-block or per-point
    series (NaN and inf kept as they are)."""
    return [round_significant(v, digits) for v in values]


@dataclass
class ErrorAccumulator:
    """Collects per-sample reconstruction errors of ``u -> first(u) -> second(first(u))``.

    Args:
        floor: the smallest norm used as the denominator of the relative error, so an all-zero
            input does not divide by zero (a millionth of a full-range vector's norm).
    """

    floor: float
    errors: list[Tensor | np.ndarray] = field(default_factory=list)
    relative: list[Tensor | np.ndarray] = field(default_factory=list)
    nan: list[Tensor | np.ndarray] = field(default_factory=list)
    inf: list[Tensor | np.ndarray] = field(default_factory=list)
    middle_bad: list[Tensor | np.ndarray] = field(default_factory=list)

    _PARTS: ClassVar[tuple[str, ...]] = ("errors", "relative", "nan", "inf", "middle_bad")

    def add(self, u: Tensor, middle: Tensor, back: Tensor) -> None:
        """Record one batch: the input, the intermediate (``z`` or ``x``), the reconstruction.

        The per-sample values stay where the batch was computed (a GPU batch is not copied to the
        host one at a time); they come to the host once, when read, or when pickled (the ranks
        of a ``torchrun`` job gather host arrays)."""
        err = per_sample_norm(back - u)
        norm = per_sample_norm(u).clamp_min(self.floor)
        has_nan = _rows(torch.isnan(middle)) | _rows(torch.isnan(back))
        has_inf = _rows(torch.isinf(middle)) | _rows(torch.isinf(back))
        err = torch.where(has_nan | has_inf, torch.full_like(err, float("inf")), err)
        self.errors.append(err)
        self.relative.append(err / norm)
        self.nan.append(has_nan)
        self.inf.append(has_inf)
        self.middle_bad.append(_rows(~torch.isfinite(middle)))

    def extend(self, other: ErrorAccumulator) -> None:
        """Append the batches ``other`` recorded, as if they had been added here in turn."""
        for name in self._PARTS:
            getattr(self, name).extend(getattr(other, name))

    def __getstate__(self) -> dict[str, object]:
        """Host arrays only, so a pickled accumulator (a rank's gathered result) holds no device tensor."""
        return {"floor": self.floor, **{name: [_host(p) for p in getattr(self, name)] for name in self._PARTS}}

    def per_sample(self) -> np.ndarray:
        """Per-sample L2 errors so far (``inf`` where the round trip was not finite)."""
        return _joined(self.errors, np.float64)

    def histogram(self, bins: int = 40) -> dict[str, object]:
        """Log10-spaced histogram of the finite errors, with the non-finite count beside it."""
        err = self.per_sample()
        finite = err[np.isfinite(err)]
        positive = np.log10(np.clip(finite, 1e-30, None))
        low, high = (float(positive.min()), float(positive.max())) if positive.size else (-8.0, 0.0)
        counts, edges = np.histogram(positive, bins=bins, range=(low, max(high, low + 1e-6)))
        return {
            "edges": [float(e) for e in edges],
            "counts": [int(c) for c in counts],
            "nonfinite": int((~np.isfinite(err)).sum()),
        }

    def metrics(self, middle_name: str, worst: int = 5) -> dict[str, object]:
        """The metric block of an audit result (see the roundtrip audit's docstring)."""
        err, rel = self.per_sample(), _joined(self.relative, np.float64)
        n = len(err)
        nan, inf = _joined(self.nan, np.bool_) if n else err, _joined(self.inf, np.bool_) if n else err
        bad = ~np.isfinite(err)
        order = np.argsort(-np.where(bad, np.inf, err), kind="stable")[:worst]
        return {
            "n": n,
            "nonfinite_fraction": float(bad.mean()) if n else 0.0,
            "nan_fraction": float(nan.mean()) if n else 0.0,
            "inf_fraction": float(inf.mean()) if n else 0.0,
            f"{middle_name}_nonfinite_fraction": float(_joined(self.middle_bad, np.bool_).mean()) if n else 0.0,
            "error_l2": summarize(err),
            "rel_error_l2": summarize(rel),
            "worst_indices": [int(i) for i in order],
        }
