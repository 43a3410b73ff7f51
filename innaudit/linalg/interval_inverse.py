"""An entrywise enclosure of the inverses of an interval matrix, block by block of a flow.

A flow's Jacobian over a box of inputs is a product ``B_K ... B_1`` of its blocks' Jacobians,
each enclosed entrywise, ``|B_k - C_k| <= E_k`` (:mod:`.boxes`), and its inverse's Jacobian is
``B_1^-1 ... B_K^-1``. Each factor's inverse is enclosed here.

Property: for ``J = C + Delta`` with ``|Delta| <= E`` and ``X`` a computed inverse of ``C``,
``X J = I + Y`` with ``|Y| <= F = |X C - I| + |X| E``; where ``||F|| < 1`` the Neumann series
``(I + Y)^-1 = sum_k (-Y)^k`` gives ``|(I + Y)^-1 - I| <= F (I - F)^-1``, so

    |J^-1 - X| <= F (I - F)^-1 |X|            (entrywise)

(Neumaier, "Interval Methods for Systems of Equations", Cambridge University Press 1990, sect.
4.1). The residual ``|X C - I|`` makes it hold for the rounded ``X``. It needs only each block's
own gap (``||F|| < 1``, about ``||C^-1|| ||E|| < 1``), where Weyl's inequality on the whole
flow's enclosure needs ``sigma_min`` of the product to exceed the product's radius, which closes
far later in a deep flow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["INVERSE_MARGIN", "inverse_enclosure"]

INVERSE_MARGIN = 1e-9
"""Relative widening of an inverse's enclosure: the float64 rounding of ``F`` and of
``(I - F)^-1`` (about ``d eps`` each, times ``1 / (1 - ||F||)``, which the gap below caps)."""

_GAP = 1e-6
"""``||F||`` must be below ``1 - _GAP``: ``(I - F)^-1`` is then computed to ``eps / _GAP``."""


def inverse_enclosure(mid: Tensor, radius: Tensor) -> tuple[Tensor, Tensor]:
    """An entrywise enclosure ``(X, R)`` of ``J^-1`` for every ``J`` in ``mid +- radius``
    (``(n, d, d)``): ``|J^-1 - X| <= R`` (module docstring); ``R`` is inf in the cells where
    ``||F||`` is not below ``1 - 1e-6`` (not certified) or ``mid`` is singular."""
    eye = torch.eye(int(mid.shape[1]), dtype=torch.float64)
    x, info = torch.linalg.inv_ex(mid)
    x = torch.where((info == 0)[:, None, None], x, torch.zeros_like(x))
    f = ((x @ mid - eye).abs() + x.abs() @ radius) * (1 + INVERSE_MARGIN)
    size = torch.linalg.matrix_norm(f, ord=2)
    ok = (info == 0) & (size < 1 - _GAP) & torch.isfinite(f).flatten(1).all(1)
    safe = torch.where(ok[:, None, None], f, torch.zeros_like(f))
    bound = (safe @ torch.linalg.inv(eye - safe) @ x.abs()) * (1 + INVERSE_MARGIN)
    return x, torch.where(ok[:, None, None], bound, torch.full_like(bound, math.inf))
