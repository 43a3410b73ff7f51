"""What a block's Lipschitz certificate rests on: the kind of rule that bounded it.

The ``bounds`` audit writes it into every block's row; the diagnosis reads it (never the
certificate's prose) to name the cause of a missing global bound.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["AFFINE_KINDS", "BoundKind"]


class BoundKind(str, Enum):
    """The rule behind a block's bound.

    ``LINEAR``: a linear map (ActNorm, 1x1 convolution, permutation), bounded by its singular
    values. ``ADDITIVE``: an additive coupling ``x2 + t(x1)``, bounded through ``Lip(t)``.
    ``AFFINE_SCALE_UNBOUNDED``: an affine coupling whose scale has no positive lower bound
    (``exp``, Glow's ``sigmoid(h + 2)``, a scale activation of unknown range): ``F^-1`` divides
    by it, no global bound. ``AFFINE_SCALE_BOUNDED``: an affine coupling whose scale lies in a
    known interval (a soft clamp), still without a global bound since its cross term grows with
    the input. ``RESIDUAL``: ``x + g(x)``, bounded through ``Lip(g)``. ``HOOK``: the block's
    own ``lipschitz_bounds()``. ``UNKNOWN``: no rule for the block's type.
    """

    LINEAR = "linear"
    ADDITIVE = "additive"
    AFFINE_SCALE_UNBOUNDED = "affine_scale_unbounded"
    AFFINE_SCALE_BOUNDED = "affine_scale_bounded"
    RESIDUAL = "residual"
    HOOK = "hook"
    UNKNOWN = "unknown"


AFFINE_KINDS = frozenset({BoundKind.AFFINE_SCALE_UNBOUNDED, BoundKind.AFFINE_SCALE_BOUNDED})
"""The kinds of affine couplings: no global Lipschitz bound, an empirical certificate."""
