"""FD and NF regularizers: known values on an identity coupling, and their gradients raise
the smallest singular value of a nearly collapsed affine coupling."""

from __future__ import annotations

import math

import pytest
import torch

from innaudit.train.regularizers import fd_directions, fd_forward, fd_inverse, fd_regularizer, nf_regularizer
from innaudit.zoo.layers import Coupling, MLPNet


def _coupling(collapse: float | None = None) -> Coupling:
    """A 2-D affine coupling (sigmoid scale); its zero-initialized net makes it affine in x2 with
    scale sigmoid(2) unless ``collapse`` sets the scale pre-activation bias (h = collapse)."""
    layer = Coupling(MLPNet(1, 2, 16, torch.Generator().manual_seed(0)), 2, "affine", "sigmoid")
    if collapse is not None:
        with torch.no_grad():
            layer.net.out.bias[1] = collapse
    return layer.double()


def _sigma_min(layer: Coupling, x: torch.Tensor) -> float:
    """Smallest singular value of the 2x2 Jacobian, minimum over the points ``x``."""
    values = []
    for point in x:
        jac = torch.autograd.functional.jacobian(lambda t: layer(t[None])[0][0], point)
        values.append(float(torch.linalg.svdvals(jac)[-1]))
    return min(values)


def test_directions_follow_the_papers_column_normalization_or_per_sample() -> None:
    like = torch.zeros(8, 3, 2)
    col = fd_directions(like, "column", torch.Generator().manual_seed(0)).flatten(1)
    assert torch.allclose(col.norm(dim=0), torch.ones(6))
    row = fd_directions(like, "sample", torch.Generator().manual_seed(0)).flatten(1)
    assert torch.allclose(row.norm(dim=1), torch.ones(8))
    with pytest.raises(ValueError, match="column or sample"):
        fd_directions(like, "batch")


@pytest.mark.parametrize("normalize,norm2", [("column", 2.0), ("sample", 16.0)])
def test_fd_on_a_linear_map_is_coeff_eps_times_the_directional_energy(normalize: str, norm2: float) -> None:
    # an additive coupling with a zero net is the identity: ||F(x) - F(x + eps d)||^2 = eps^2 ||d||^2
    layer = Coupling(MLPNet(1, 1, 4, torch.Generator()), 2, "additive").double()
    x = torch.randn(16, 2, dtype=torch.float64)
    fwd = lambda t: layer(t)[0]  # noqa: E731
    # sum of squared direction norms: D = 2 columns of norm 1, or B = 16 unit rows
    expected = 1e-4 * 0.1 * norm2
    assert float(fd_forward(fwd, x, normalize=normalize)) == pytest.approx(expected, rel=1e-9)
    assert float(fd_inverse(layer.inverse, x, fwd(x), normalize=normalize)) == pytest.approx(expected, rel=1e-9)
    assert float(fd_regularizer(fwd, layer.inverse, x, normalize=normalize, coeff=0.0, inverse_coeff=0.0)) == 0.0
    # a scaling by s multiplies the forward term by s^2 and the inverse term by 1/s^2
    s = torch.tensor([3.0, 0.5], dtype=torch.float64)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    d = fd_directions(x, normalize, gen())
    assert float(fd_forward(lambda t: t * s, x, normalize=normalize, generator=gen())) == pytest.approx(
        1e-4 * 0.1 * float((d * s).pow(2).sum()), rel=1e-9
    )
    assert float(fd_inverse(lambda t: t / s, x, x * s, normalize=normalize, generator=gen())) == pytest.approx(
        1e-4 * 0.1 * float((d / s).pow(2).sum()), rel=1e-9
    )


def test_nf_regularizer_is_the_scaled_gaussian_nll() -> None:
    x = torch.randn(10, 2, dtype=torch.float64)
    layer = _coupling()
    z, log_det = layer(x)
    expected = (0.5 * z.pow(2).sum(1) + math.log(2 * math.pi) - log_det).mean()
    assert float(nf_regularizer(z, log_det, coeff=1e-5)) == pytest.approx(1e-5 * float(expected))
    # a collapsing scale makes -log det, hence the regularizer, large and positive
    zc, ldc = _coupling(collapse=-20.0)(x)
    assert float(nf_regularizer(zc, ldc, coeff=1.0)) > float(nf_regularizer(z, log_det, coeff=1.0)) + 15


@pytest.mark.parametrize("which", ["fd", "nf"])
def test_regularizer_gradient_alone_raises_sigma_min(which: str) -> None:
    torch.manual_seed(0)
    layer = _coupling(collapse=-12.0)  # scale sigmoid(-10) ~ 4.5e-5: nearly singular
    x = torch.randn(64, 2, dtype=torch.float64)
    before = _sigma_min(layer, x[:8])
    assert before < 1e-4
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for step in range(20):
        if which == "fd":
            loss = fd_regularizer(
                lambda t: layer(t)[0], layer.inverse, x, generator=torch.Generator().manual_seed(step)
            )
        else:
            loss = nf_regularizer(*layer(x), coeff=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _sigma_min(layer, x[:8])
    assert after > 10 * before, (before, after)
