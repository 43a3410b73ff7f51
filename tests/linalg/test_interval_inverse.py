"""The Neumann enclosure of an interval matrix's inverses holds every sampled inverse, is exact
for a point matrix and for a unit triangular block (an additive coupling's Jacobian), and is
refused where the box holds singular matrices; a flow's inverse bounded block by block holds
where Weyl's inequality on the whole flow gives up."""

from __future__ import annotations

import math

import torch

from innaudit.linalg.boxes import Enclosure, forward_bound, inverse_parts, product_enclosure, weyl_inverse
from innaudit.linalg.interval_inverse import inverse_enclosure


def test_the_inverse_enclosure_holds_every_sampled_inverse_and_is_exact_at_a_point() -> None:
    gen = torch.Generator().manual_seed(2)
    mid = torch.eye(3, dtype=torch.float64)[None] + 0.3 * torch.randn(4, 3, 3, generator=gen, dtype=torch.float64)
    radius = torch.tensor([0.0, 0.01, 0.05, 5.0], dtype=torch.float64)[:, None, None] * torch.ones(4, 3, 3)
    x, r = inverse_enclosure(mid, radius)
    torch.testing.assert_close(x[0], torch.linalg.inv(mid[0]))
    assert float(r[0].max()) < 1e-12  # a point matrix: its inverse, up to rounding
    assert bool(torch.isinf(r[3]).all())  # the box holds singular matrices: not certified
    for i in (1, 2):
        j = mid[i] + (2 * torch.rand(400, 3, 3, generator=gen, dtype=torch.float64) - 1) * radius[i]
        assert bool(((torch.linalg.inv(j) - x[i]).abs() <= r[i]).all())
    triangular = torch.tensor([[[1.0, 0.0], [2.0, 1.0]]], dtype=torch.float64)
    width = torch.tensor([[[0.0, 0.0], [0.5, 0.0]]], dtype=torch.float64)
    x, r = inverse_enclosure(triangular, width)  # [[1, 0], [a, 1]]^-1 = [[1, 0], [-a, 1]]: exact
    torch.testing.assert_close(x[0], torch.tensor([[1.0, 0.0], [-2.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(r[0], width[0], rtol=1e-8, atol=1e-15)


def test_a_deep_flows_inverse_is_certified_block_by_block_where_weyl_on_the_product_fails() -> None:
    """Twelve residual-like blocks ``I + A_k``, ``||A_k|| <= 0.5``, each entry uncertain by
    0.02: every block's inverse is certified, the product's radius swamps its ``sigma_min``."""
    gen = torch.Generator().manual_seed(3)
    parts, samples = [], []
    for _ in range(12):
        a = torch.randn(2, 2, generator=gen, dtype=torch.float64)
        mid = torch.eye(2, dtype=torch.float64) + 0.5 * a / torch.linalg.matrix_norm(a, ord=2)
        radius = torch.full((2, 2), 0.02, dtype=torch.float64)
        parts.append(Enclosure(mid[None], radius[None]))
        samples.append(mid + (2 * torch.rand(300, 2, 2, generator=gen, dtype=torch.float64) - 1) * radius)
    assert math.isinf(float(weyl_inverse(product_enclosure(parts))[0]))
    back, certified = inverse_parts(parts)
    assert bool(certified.all())
    bound = float(forward_bound(product_enclosure(back))[0])
    product = samples[0]
    for s in samples[1:]:
        product = s @ product
    assert float((1 / torch.linalg.svdvals(product)[:, -1]).max()) <= bound < math.inf
