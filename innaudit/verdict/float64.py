"""What a float64 re-run of a round trip says: precision loss, a wrong map, or a broken map.

A round trip that fails in float32 is repeated on a float64 copy of the model
(``--float64-check``). Three outcomes, each decided by the float64 figures themselves:

- ``exact``: every float64 round trip is finite and its largest relative error is within
  ``exact_limit`` (the round-trip gate's warn level, 1e-4 by default): float32 precision is
  what was lost; the map is invertible there and computable with more precision;
- ``wrong``: every float64 round trip is finite but its largest relative error is above
  ``exact_limit``: more precision does not recover the input, the map is ill-conditioned or
  not invertible there (finite is not invertible);
- ``nonfinite``: float64 round trips are non-finite too: the computed map itself breaks there.

Behrmann et al., "Understanding and Mitigating Exploding Inverses in Invertible Neural
Networks", AISTATS 2021 (https://arxiv.org/abs/2006.09347), section 2: rounding is amplified by
``Lip(F^-1)``; a map whose float64 round trip still fails is not saved by precision.
"""

from __future__ import annotations

import math
from enum import Enum

from innaudit.core.metrics import percent

__all__ = ["EXACT_LIMIT", "Float64", "float64_outcome", "float64_sentence"]

EXACT_LIMIT = 1e-4
"""The default ``exact_limit``: the ``roundtrip`` audit's warn level."""


class Float64(str, Enum):
    """The outcome of a float64 re-run."""

    EXACT = "exact"
    WRONG = "wrong"
    NONFINITE = "nonfinite"


def float64_outcome(nonfinite: float, rel_max: float, exact_limit: float = EXACT_LIMIT) -> Float64:
    """``nonfinite`` (float64 share) > 0 is NONFINITE; a largest relative error above
    ``exact_limit`` (or NaN) is WRONG; otherwise EXACT."""
    if nonfinite > 0:
        return Float64.NONFINITE
    if math.isnan(rel_max) or rel_max > exact_limit:
        return Float64.WRONG
    return Float64.EXACT


def float64_sentence(nonfinite: float, rel_max: float, exact_limit: float = EXACT_LIMIT) -> str:
    """The outcome in words, with the float64 figure it rests on."""
    outcome = float64_outcome(nonfinite, rel_max, exact_limit)
    if outcome is Float64.NONFINITE:
        return (
            f"float64 round trips are non-finite too ({percent(nonfinite)}): the computed map "
            "itself breaks there, more precision does not fix it"
        )
    if outcome is Float64.WRONG:
        return (
            f"float64 round trips are finite but wrong (max relative error {rel_max:.2g}, above "
            f"{exact_limit:.0e}): the map is ill-conditioned or not invertible there, more "
            "precision does not fix it"
        ).replace("e-0", "e-")
    return (
        f"every float64 round trip is finite with max relative error {rel_max:.2g} (within "
        f"{exact_limit:.0e}): float32 precision is lost, the map itself is invertible there"
    ).replace("e-0", "e-")
