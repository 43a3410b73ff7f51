"""The chain bound through a narrow state: kept factored, it equals the dense computation."""

from __future__ import annotations

import pytest
import torch

from innaudit.linalg.chain import Affine, Slopes, chain_bound, chain_limit


def _random(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(rows, cols, generator=gen, dtype=torch.float64) / cols**0.5


def _chains(gen: torch.Generator) -> tuple[list, list]:
    """Two blocks of width 40 joined through a state of 6 coordinates: once as the run of three
    affine stages (factored by the chain), once with that run multiplied out (a dense 40x40)."""
    a, b, c, d, e, f = (_random(*s, gen) for s in ((40, 6), (40, 40), (6, 40), (6, 6), (40, 6), (6, 40)))
    relu = Slopes.uniform(40, 0.0, 1.0)
    leaky = Slopes.uniform(40, 0.1, 1.0)
    run = [Affine(c), Affine(d), Affine(e)]
    narrow = [Affine(a), relu, Affine(b), leaky, *run, relu, Affine(f)]
    dense = [Affine(a), relu, Affine(b), leaky, Affine(e @ d @ c), relu, Affine(f)]
    return narrow, dense


def test_a_factored_narrow_state_gives_the_dense_bound() -> None:
    narrow, dense = _chains(torch.Generator().manual_seed(0))
    assert chain_bound(narrow) == pytest.approx(chain_bound(dense), rel=1e-9)


def test_the_factored_bound_is_above_every_sampled_jacobian_norm() -> None:
    gen = torch.Generator().manual_seed(1)
    narrow, _ = _chains(gen)
    bound = chain_bound(narrow)
    assert bound is not None
    for _ in range(200):  # any slopes inside the ranges: one Jacobian of the chain
        j = torch.eye(6, dtype=torch.float64)
        for stage in narrow:
            if isinstance(stage, Affine):
                j = stage.matrix @ j
            else:
                t = torch.rand(stage.low.numel(), generator=gen, dtype=torch.float64)
                j = (stage.low + t * (stage.high - stage.low))[:, None] * j
        assert float(torch.linalg.matrix_norm(j, ord=2)) <= bound * (1 + 1e-12)


def test_a_chain_wider_than_the_limit_has_no_bound() -> None:
    narrow, _ = _chains(torch.Generator().manual_seed(2))
    with chain_limit(39):
        assert chain_bound(narrow) is None
    with chain_limit(40):
        assert chain_bound(narrow) is not None
