"""Findings an audit makes before it measures (``gradient``'s stateful layers, iterative
inverses, a chain of blocks that does not compose to the model), as typed records.

A finding carries a :class:`PreflightKind`, so the audit counts findings by kind, never by
searching their wording; the text is the sentence the report shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = ["PreflightFinding", "PreflightKind", "count", "texts"]


class PreflightKind(str, Enum):
    """What a preflight finding is about."""

    STATEFUL_LAYERS = "stateful_layers"
    """A block holds BatchNorm, InstanceNorm or Dropout: a training-mode re-run differs."""
    ITERATIVE_INVERSE = "iterative_inverse"
    """The inverse is a solver: reconstructions are as exact as its tolerance."""
    COMPOSITION = "composition"
    """The chain of blocks does not give the model's own output."""


@dataclass(frozen=True)
class PreflightFinding:
    """One finding made before measuring: its ``kind``, the ``block`` it is about ("" for the
    whole model) and the sentence the report shows."""

    kind: PreflightKind
    text: str
    block: str = ""


def count(found: Iterable[PreflightFinding], kind: PreflightKind) -> int:
    """How many of ``found`` are of ``kind``."""
    return sum(1 for f in found if f.kind is kind)


def texts(found: Iterable[PreflightFinding]) -> list[str]:
    """The sentences of ``found``, in order (the report's ``preflight`` metric)."""
    return [f.text for f in found]
