"""A block's measured constants from its dense Jacobian (the ``bounds`` audit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from innaudit.audits.block_constants import _square
from tests.audits.linear_models import Linear


def test_a_residual_block_with_no_finite_jacobian_is_nan_not_an_error() -> None:
    """The ``bounds`` audit of a flow whose block Jacobians are all non-finite on a set: NaN
    constants (not measured), never an exception."""
    flat = torch.full((2, 4, 4), float("nan"), dtype=torch.float64)
    finite = torch.isfinite(flat).reshape(2, -1).all(1)
    got = _square(flat, finite, True, np.zeros(3), np.zeros(3))
    assert np.isnan(got.forward).all() and np.isnan(got.inverse).all() and np.isnan(got.lip_g).all()


def test_lip_g_of_a_residual_block_is_its_largest_singular_value() -> None:
    """``J = I + G`` with ``G``'s singular values chosen: ``Lip(g) = sigma_max(G)`` exactly."""
    g = Linear(torch.tensor([0.9, 0.5, 0.1, 1e-9], dtype=torch.float64), 3).weight.detach()
    flat = (torch.eye(4, dtype=torch.float64) + g)[None]
    got = _square(flat, torch.ones(1, dtype=torch.bool), True, np.zeros(1), np.zeros(1))
    assert got.lip_g[0] == pytest.approx(0.9, rel=1e-12)
