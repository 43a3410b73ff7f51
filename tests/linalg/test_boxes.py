"""The centred-form enclosure of a chain's Jacobian over boxes: exact where every activation is
stable, never below a sampled Jacobian across kinks, and tight as the box shrinks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from innaudit.linalg.boxes import box_bounds_batch, chain_enclosure, enclose, forward_bound
from innaudit.linalg.chain import Affine, Slopes, Stage, net_stages, skip_stages
from innaudit.linalg.intervals import box_slopes
from tests.linalg.nets import relu_net


def _net(gen: torch.Generator, width: int = 12, dim: int = 3, out: int | None = None) -> nn.Sequential:
    return relu_net(gen, width, dim, out)


def _jacobians(fn, x: Tensor) -> Tensor:
    return torch.stack([torch.autograd.functional.jacobian(fn, p) for p in x])


SWAP = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)


def flow(seed: int, steps: int = 3, width: int = 8) -> tuple[list[list[Stage]], list[list[Stage]], object]:
    """A 2-D additive coupling flow ``x2 += t_k(x1)``, then a swap, ``steps`` times, as block
    chains (forward, and each block's inverse), and the same map in torch."""
    gen = torch.Generator().manual_seed(seed)
    nets = [_net(gen, width, 1, 1) for _ in range(steps)]
    blocks: list[list[Stage]] = []
    inverses: list[list[Stage]] = []
    index = torch.arange(2)
    for net in nets:
        inner = net_stages(list(net), (1,))
        assert inner is not None
        blocks.append(skip_stages(inner, 2, index[:1], index[1:]))
        inverses.append(skip_stages(inner, 2, index[:1], index[1:], -1.0))
        blocks.append([Affine(SWAP)])
        inverses.append([Affine(SWAP)])

    def fn(x: Tensor) -> Tensor:
        for net in nets:
            x = torch.stack([x[..., 0], x[..., 1] + net(x[..., :1])[..., 0]], -1) @ SWAP.T
        return x

    return blocks, inverses, fn


def test_every_unit_stable_in_the_box_gives_the_dense_jacobians_norm_both_ways() -> None:
    net = _net(torch.Generator().manual_seed(2))
    stages = net_stages(list(net), (3,))
    assert stages is not None
    centre = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    found = box_bounds_batch([stages], None, centre - 1e-8, centre + 1e-8)
    assert found is not None
    j = _jacobians(net, centre)
    sv = torch.linalg.svdvals(j)
    torch.testing.assert_close(found.forward, sv[:, 0], rtol=1e-8, atol=0)
    regular = sv[:, -1] > 1e-6  # a point where the net's Jacobian is singular has no finite inverse
    assert int(regular.sum()) >= 3
    torch.testing.assert_close(found.inverse[regular], 1 / sv[regular, -1], rtol=1e-8, atol=0)
    torch.testing.assert_close(found.centre_forward, sv[:, 0], rtol=1e-12, atol=0)


def test_the_enclosure_holds_every_jacobian_sampled_in_boxes_across_kinks() -> None:
    gen = torch.Generator().manual_seed(5)
    net = _net(gen)
    stages = net_stages(list(net), (3,))
    assert stages is not None
    centre = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    radius = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 0.01], dtype=torch.float64)[:, None].expand(6, 3)
    slopes = box_slopes(stages, centre, radius)
    assert slopes is not None
    e = enclose(stages, slopes)
    bound = forward_bound(e)
    for i in range(6):
        points = centre[i] + radius[i] * (2 * torch.rand(400, 3, generator=gen, dtype=torch.float64) - 1)
        j = _jacobians(net, points)
        assert bool(((j - e.mid[i]).abs() <= e.radius[i] + 1e-12).all())
        assert float(torch.linalg.matrix_norm(j, ord=2).max()) <= float(bound[i])


def test_the_flow_enclosure_and_inverse_hold_and_shrink_to_the_point_value() -> None:
    blocks, inverses, fn = flow(7)
    gen = torch.Generator().manual_seed(8)
    centre = 2 * torch.randn(4, 2, generator=gen, dtype=torch.float64)
    for r in (0.5, 0.05, 1e-9):
        found = box_bounds_batch(blocks, inverses, centre - r, centre + r)
        assert found is not None
        for i in range(4):
            points = centre[i] + r * (2 * torch.rand(300, 2, generator=gen, dtype=torch.float64) - 1)
            sv = torch.linalg.svdvals(_jacobians(fn, points))
            assert float(sv[:, 0].max()) <= float(found.forward[i]) * (1 + 1e-9)
            assert float((1 / sv[:, -1]).max()) <= float(found.inverse[i]) * (1 + 1e-9)
    sv = torch.linalg.svdvals(_jacobians(fn, centre))
    torch.testing.assert_close(found.forward, sv[:, 0], rtol=1e-8, atol=0)
    torch.testing.assert_close(found.inverse, 1 / sv[:, -1], rtol=1e-8, atol=0)


def test_a_linear_chain_is_enclosed_exactly_block_by_block() -> None:
    gen = torch.Generator().manual_seed(9)
    a, b = (torch.randn(3, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    e = chain_enclosure([[Affine(a)], [Affine(b)]], [])
    torch.testing.assert_close(e.mid[0], b @ a)
    assert float(e.radius.abs().max()) == 0.0
    with pytest.raises(ValueError, match="activation stages"):
        enclose([Affine(a)], [Slopes.uniform(3, 0.0, 1.0)])
