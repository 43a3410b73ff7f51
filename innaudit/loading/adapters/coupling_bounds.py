"""Bound rules for the libraries' affine coupling blocks, for :mod:`innaudit.linalg.lipschitz`.

An affine coupling ``y2 = x2 * g(h(x1)) + t(x1)`` has no global Lipschitz bound: ``F^-1`` divides
by ``g``, and even a bounded ``g`` leaves the cross term ``(x2 + t) g'(h) J_h``, which grows with
the input (Behrmann et al., AISTATS 2021, table 1; https://arxiv.org/abs/2006.09347). Its
certificate is empirical; what a rule says is the kind of scale, read from the library's code:

- FrEIA ``AllInOneBlock``: ``g = exp(clamp * tanh(a / 10))``, in ``[e^-clamp, e^clamp]``.
- FrEIA ``GLOWCouplingBlock``, ``RNVPCouplingBlock``, ``AffineCouplingOneSided``,
  ``ConditionalAffineTransform``: ``g = exp(clamp * f_clamp(s))`` with the library's
  ``f_clamp`` (``0.636 atan``, ``tanh``, ``2 (sigmoid - 1/2)``, all in ``(-1, 1)``):
  ``g`` in ``(e^-clamp, e^clamp)``; a user's ``f_clamp`` has no known range.
- nflows ``AffineCouplingTransform``: ``g = sigmoid(u + 2) + 1e-3``, in ``(1e-3, 1 + 1e-3)``,
  unless a subclass replaces ``_scale_and_shift``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from innaudit.core.bound_kind import BoundKind
from innaudit.linalg.lipschitz import BlockBound, register_matched_rule

__all__ = ["scale_range"]

FREIA_AFFINE = ("GLOWCouplingBlock", "RNVPCouplingBlock", "AffineCouplingOneSided", "ConditionalAffineTransform")


def _affine(low: float | None, high: float | None, what: str) -> BlockBound:
    """An affine coupling's empirical certificate; ``low`` None: the scale has no known lower bound."""
    if low is None or high is None or not (low > 0 and math.isfinite(high)):
        return BlockBound(
            "",
            None,
            None,
            f"affine coupling ({what}) has no global bound: the scale has no known positive lower bound",
            kind=BoundKind.AFFINE_SCALE_UNBOUNDED,
            empirical=f"the {what} scale has no known positive lower bound (1/g has no bound)",
        )
    return BlockBound(
        "",
        None,
        None,
        f"affine coupling ({what}, scale in [{low:.4g}, {high:.4g}]) has no global bound: only locally bi-Lipschitz",
        kind=BoundKind.AFFINE_SCALE_BOUNDED,
        empirical=f"the scale lies in [{low:.4g}, {high:.4g}], but the cross term (x2 + t) g'(h) J_h grows with the input",
    )


def _library_clamp(block: Any) -> bool:
    """FrEIA's own ``f_clamp`` (one of its three string choices), whose range is ``(-1, 1)``."""
    f = getattr(block, "f_clamp", None)
    return f is not None and (getattr(f, "__module__", "") or "").split(".")[0] in ("FrEIA", "torch")


def scale_range(block: nn.Module) -> tuple[float | None, float | None]:
    """The interval the scale ``g`` of a library affine coupling lies in, ``(None, None)`` when unknown."""
    name = _is(block, "FrEIA", ("AllInOneBlock", *FREIA_AFFINE))
    if name == "AllInOneBlock" or (name and _library_clamp(block)):
        clamp = float(getattr(block, "clamp", math.inf))
        return math.exp(-clamp), math.exp(clamp)
    if _is(block, "nflows", ("AffineCouplingTransform",)):
        method = getattr(type(block), "_scale_and_shift", None)
        own = (getattr(method, "__module__", "") or "").startswith("nflows")
        return (1e-3, 1.0 + 1e-3) if own else (None, None)
    return None, None


def _is(block: nn.Module, library: str, names: tuple[str, ...]) -> str:
    """The first of ``names`` that ``block``'s class or a base of it is, defined in ``library``
    (read from ``__module__`` strings: asking never imports the library); empty when none."""
    for cls in type(block).__mro__:
        if cls.__name__ in names and (getattr(cls, "__module__", "") or "").split(".")[0] == library:
            return cls.__name__
    return ""


def _freia_rule(block: Any, in_shape: tuple[int, ...]) -> BlockBound:
    low, high = scale_range(block)
    return _affine(low, high, f"FrEIA {_is(block, 'FrEIA', ('AllInOneBlock', *FREIA_AFFINE))}")


def _nflows_rule(block: Any, in_shape: tuple[int, ...]) -> BlockBound:
    low, high = scale_range(block)
    return _affine(low, high, "nflows AffineCouplingTransform")


register_matched_rule(lambda b: bool(_is(b, "FrEIA", ("AllInOneBlock", *FREIA_AFFINE))), _freia_rule)
register_matched_rule(lambda b: bool(_is(b, "nflows", ("AffineCouplingTransform",))), _nflows_rule)
