"""The Krylov bases' reorthogonalization: one float64 pass where it suffices, a second where the
first cancelled most of the vector (Daniel, Gragg, Kaufman and Stewart's criterion)."""

from __future__ import annotations

import torch

from innaudit.linalg._common import REPEAT, orthogonalize


def _basis(rows: int, j: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(rows, d, j, generator=g, dtype=torch.float64))
    return q.transpose(1, 2).contiguous()  # (rows, j, d), orthonormal rows


def test_a_vector_almost_in_the_span_ends_orthogonal_to_rounding() -> None:
    """``w = Q^T c + 1e-10 r``: one classical pass leaves components of about ``1e-16 ||w||``
    along ``Q``, i.e. ``1e-6`` of what remains; the second pass brings them to rounding."""
    basis = _basis(4, 12, 200)
    g = torch.Generator().manual_seed(1)
    c = torch.randn(4, 12, 1, generator=g, dtype=torch.float64)
    w = (basis.transpose(1, 2) @ c).squeeze(2) + 1e-10 * torch.randn(4, 200, generator=g, dtype=torch.float64)
    out = orthogonalize(w, basis)
    left = (basis @ out.unsqueeze(2)).squeeze(2).abs().max(1).values / out.norm(dim=1)
    assert bool((left < 1e-13).all()), left
    assert bool((out.norm(dim=1) < REPEAT * w.norm(dim=1)).all())  # the criterion was met


def test_mixed_rows_each_get_what_they_need() -> None:
    """Rows that cancel and rows that do not, in one batch: every row ends orthogonal, and a
    row that did not cancel equals a single pass of classical Gram-Schmidt exactly."""
    basis = _basis(6, 8, 100, seed=2)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 100, generator=g, dtype=torch.float64)
    w[::2] = (basis[::2].transpose(1, 2) @ torch.randn(3, 8, 1, generator=g, dtype=torch.float64)).squeeze(
        2
    ) + 1e-9 * w[::2]
    out = orthogonalize(w, basis)
    left = (basis @ out.unsqueeze(2)).squeeze(2).abs().max(1).values / out.norm(dim=1)
    assert bool((left < 1e-13).all()), left
    single = w - (basis.transpose(1, 2) @ (basis @ w.unsqueeze(2))).squeeze(2)
    assert torch.equal(out[1::2], single[1::2])
    assert not torch.allclose(out[::2], single[::2], rtol=0, atol=0)


def test_a_basis_view_is_read_in_place() -> None:
    """A slice of a larger basis (the Krylov loops pass ``basis[:, :j]``) gives the same answer
    as a contiguous copy."""
    full = torch.zeros(3, 10, 50, dtype=torch.float64)
    full[:, :5] = _basis(3, 5, 50, seed=4)
    w = torch.randn(3, 50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(orthogonalize(w, full[:, :5]), orthogonalize(w, full[:, :5].contiguous()), rtol=0, atol=1e-15)
