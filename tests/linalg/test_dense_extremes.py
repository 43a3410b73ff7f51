"""A Jacobian's extreme singular values, dense: the Gram matrix's eigenvalues where they are
accurate, the SVD where the condition number would cost them digits."""

from __future__ import annotations

import math

import pytest
import torch

from innaudit.linalg.exact import GRAM_COND, dense_extremes
from tests.audits.linear_models import Linear


def _with_singular_values(values: torch.Tensor, seed: int) -> torch.Tensor:
    """``U diag(values) V^T`` with seeded random orthogonal ``U``, ``V`` (float64)."""
    return Linear(values, seed).weight.detach()


@pytest.mark.parametrize("cond", [1.0, 30.0, 0.5 * GRAM_COND, 10 * GRAM_COND, 1e9])
def test_chosen_extremes_are_recovered(cond: float) -> None:
    """Singular values spread log-evenly from 2 down to ``2 / cond``: both extremes as accurate
    as float64's SVD makes them (``sigma_min`` to about ``eps cond`` relative), below and above
    the switch to the SVD (the Gram route alone misses ``sigma_min`` at ``cond = 1e9`` by 100 %)."""
    values = 2.0 * torch.logspace(0, -math.log10(cond), 40, dtype=torch.float64)
    mats = torch.stack([_with_singular_values(values, seed) for seed in range(3)])
    top, low = dense_extremes(mats)
    assert torch.allclose(top, torch.full_like(top, 2.0), rtol=1e-12, atol=0)
    assert torch.allclose(low, torch.full_like(low, 2.0 / cond), rtol=max(1e-9, 1e-14 * cond), atol=0)
    gram_only = torch.linalg.eigvalsh(mats.mT @ mats)[:, 0].clamp_min(0).sqrt()
    if cond > 1e8:  # what the switch is for
        assert not torch.allclose(gram_only, torch.full_like(low, 2.0 / cond), rtol=0.5, atol=0)


def test_a_singular_matrix_has_sigma_min_zero_not_nan() -> None:
    values = torch.tensor([3.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    top, low = dense_extremes(_with_singular_values(values, 7)[None])
    assert float(top[0]) == pytest.approx(3.0, rel=1e-12)
    assert float(low[0]) < 1e-14


def test_mixed_batches_take_each_route_per_matrix() -> None:
    """A well-conditioned and an ill-conditioned matrix in one batch: each to float64's accuracy."""
    good = _with_singular_values(torch.linspace(1.0, 0.5, 16, dtype=torch.float64), 1)
    bad = _with_singular_values(torch.logspace(0, -10, 16, dtype=torch.float64), 2)
    top, low = dense_extremes(torch.stack([good, bad]))
    assert float(low[0]) == pytest.approx(0.5, rel=1e-12)
    assert float(low[1]) == pytest.approx(1e-10, rel=1e-4)
    assert torch.allclose(top, torch.ones(2, dtype=torch.float64), rtol=1e-9, atol=0)


def test_no_matrix_gives_no_values() -> None:
    """Every sample's Jacobian non-finite leaves an empty batch: empty answers, no error."""
    top, low = dense_extremes(torch.zeros(0, 5, 5, dtype=torch.float64))
    assert top.shape == (0,) and low.shape == (0,)
