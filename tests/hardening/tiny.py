"""The small model the hardening tests write reports for: one additive coupling on R^4."""

from __future__ import annotations

from pathlib import Path

from innaudit import save_checkpoint, zoo
from innaudit.core.domain import DataDomain

TINY = {
    "shape": [4],
    "steps": 1,
    "hidden": 8,
    "coupling": "additive",
    "permutation": "reverse",
    "actnorm": False,
    "seed": 0,
}
"""A zoo ``coupling-vector`` config that builds in milliseconds and passes every audit."""


def save_tiny(path: Path) -> Path:
    """The :data:`TINY` model saved as a native checkpoint at ``path``."""
    return save_checkpoint(path, zoo.build("coupling-vector", TINY), "coupling-vector", TINY, DataDomain(shape=(4,)))
