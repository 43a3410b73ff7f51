"""The data domain of a model: the shape, range and quantization of the inputs it was trained on.

Noise sets, clipping conventions and the attack radius are all derived from it, so it is part of
every native checkpoint. It imports nothing heavy, so the CLI and config can use it freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from innaudit.core.errors import LoadError, short_repr

__all__ = ["MAX_NUMEL", "DataDomain"]

MAX_NUMEL = 1 << 31
"""Most values in one sample (8 GiB in float32): a declared shape beyond it is an error, not an
allocation that fails halfway through a run."""


@dataclass(frozen=True)
class DataDomain:
    """Shape and range of one input sample.

    Attributes:
        shape: the shape of one sample, without the batch dimension, e.g. ``(1, 8, 8)``.
        low: the smallest value a data element takes.
        high: the largest value a data element takes.
        levels: number of quantization levels per element (17 for the 8x8 digits, 256 for 8-bit
            images), or ``None`` for continuous data. A level ``k`` sits at ``low + k * bin``,
            and training adds uniform dequantization noise of one bin.
        name: a short description of the data, e.g. ``"digits"``.
        assumed_range: True when the model declared its shape but not its range, so
            ``[low, high]`` is a default rather than a fact: data are not checked against it
            (:mod:`innaudit.data.convert`). Not stored in checkpoints or reports.
    """

    shape: tuple[int, ...]
    low: float = 0.0
    high: float = 1.0
    levels: int | None = None
    name: str = ""
    assumed_range: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not self.shape or any(int(s) <= 0 for s in self.shape):
            raise LoadError(f"data shape {self.shape!r} is not a shape; expected positive sizes")
        if self.numel > MAX_NUMEL:
            raise LoadError(
                f"data shape {short_repr(self.shape)} holds {self.numel:.3g} values per sample; innaudit "
                f"audits at most {MAX_NUMEL:.3g} (2^31): check the model's input_shape"
            )
        if not self.high > self.low:
            raise LoadError(f"data range [{self.low}, {self.high}] is empty; expected low < high")
        if self.levels is not None and self.levels < 2:
            raise LoadError(f"data levels {self.levels} must be at least 2 (or null if continuous)")

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    @property
    def bin_width(self) -> float | None:
        """Width of one quantization bin, ``(high - low) / levels``; None for continuous data."""
        return None if self.levels is None else self.width / self.levels

    @property
    def numel(self) -> int:
        """Number of elements in one sample."""
        n = 1
        for s in self.shape:
            n *= int(s)
        return n

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (ints, floats, strings, lists) for checkpoints and reports."""
        return {
            "shape": [int(s) for s in self.shape],
            "low": float(self.low),
            "high": float(self.high),
            "levels": self.levels,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DataDomain:
        """Build a domain from :meth:`to_dict` output, with a clear error on bad content."""
        try:
            levels = raw.get("levels")
            return cls(
                shape=tuple(int(s) for s in raw["shape"]),
                low=float(raw.get("low", 0.0)),
                high=float(raw.get("high", 1.0)),
                levels=None if levels is None else int(levels),
                name=str(raw.get("name", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LoadError(
                f"data description {dict(raw)!r} is malformed ({exc}); expected keys shape, low, high, levels"
            ) from None
