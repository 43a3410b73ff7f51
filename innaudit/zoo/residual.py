"""Residual flows (i-ResNet / ResFlow): ``residual-vector`` and ``residual-image``.

Each block is ``y = x + g(x)`` with ``g`` a small network whose linear / conv layers are
spectrally normalized to norm ``<= c < 1`` each, so that ``Lip(g) <= c^n < 1`` for ``n``
layers and a 1-Lipschitz activation (Behrmann et al., "Invertible Residual
Networks", ICML 2019; Chen et al., "Residual Flows", NeurIPS 2019). Such a block is globally
bi-Lipschitz (Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, Section 3):

    Lip(F) <= 1 + c,        Lip(F^-1) <= 1 / (1 - c)

with ``c`` here ``Lip(g)``: its inverse cannot explode anywhere, only converge slowly.
:meth:`ResidualBlock.lipschitz_bounds` returns this pair for the *certified* ``c``: the product of the exact spectral norms of the
normalized weights (computed by SVD when asked, not the power-iteration estimate) times the
activation's Lipschitz constant (1 for LipSwish).

Spectral normalization: see :mod:`innaudit.zoo.spectral`; :meth:`ResidualFlow.calibrate`
(called by the training recipes before saving) sets every layer's estimate to the exact
spectral norm, so a saved model satisfies ``Lip(g) <= c`` exactly, up to rounding.

Inverse: Banach fixed-point iteration ``x_{k+1} = y - g(x_k)`` from ``x_0 = y - g(y)``, with
error ``<= c^k / (1 - c) * ||x_1 - x_0||``. It stops for the whole batch when every element
moved by at most ``tol * (1 + |y|)`` in the last step (``inverse_tolerance``), or after
``inverse_max_iter`` steps. The model reports (see :class:`ResidualFlow`):

- ``inverse_cap_hits``: cumulative count of (sample, block) inversions that stopped at the
  cap without meeting the tolerance (the ``roundtrip`` audit reports the increase per set);
- ``last_inverse_iterations``: the largest iteration count any block needed in the last
  ``inverse`` call.

Log-det: ``"exact"`` (vectors only) is ``slogdet(I + J_g(x))`` with ``J_g`` built analytically
layer by layer (cheap for small D; the brute-force 2x2 case of the checkerboard); ``"series"``
is the truncated power series ``log det(I + J) = sum_{k>=1} (-1)^{k+1} tr(J^k) / k`` with a
Hutchinson trace estimate ``tr(A) ~ v^T A v`` (``log_det_terms`` terms, one Gaussian ``v`` per
sample), marked ``log_det_kind = "estimated"``. In eval the probe vectors come from a generator
with a fixed seed, so the estimate is a deterministic function of the input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innaudit.model.iterative import Solve
from innaudit.zoo import register
from innaudit.zoo.flow import SequentialFlow
from innaudit.zoo.layers import Squeeze2d
from innaudit.zoo.spectral import LipSwish, SpectralConv2d, SpectralLayer, SpectralLinear

__all__ = [
    "LipSwish",
    "ResidualBlock",
    "ResidualFlow",
    "ResidualImage",
    "ResidualVector",
    "SpectralConv2d",
    "SpectralLinear",
]


class ResidualBlock(nn.Module):
    """``y = x + g(x)``, ``g = L_n o act o ... o act o L_1`` with spectrally normalized ``L_i``.

    Args:
        layers: the spectrally normalized layers of ``g`` (an activation between each pair).
        tolerance: fixed-point stopping rule, per element ``|x_{k+1} - x_k| <= tol (1 + |y|)``.
        max_iter: iteration cap of the fixed-point inverse.
        log_det: ``"exact"`` (vector blocks) or ``"series"`` (Hutchinson power series).
        log_det_terms: number of power-series terms.
    """

    inverse_kind = "iterative"

    def __init__(
        self, layers: Sequence[SpectralLayer], tolerance: float, max_iter: int, log_det: str, log_det_terms: int
    ) -> None:
        super().__init__()
        if log_det not in ("exact", "series"):
            raise ValueError(f"log_det {log_det!r} is unknown; expected exact or series")
        if log_det == "exact" and not all(isinstance(la, SpectralLinear) for la in layers):
            raise ValueError("the exact log-det needs linear layers (vector inputs)")
        self.layers = nn.ModuleList(layers)
        self.act = LipSwish()
        self.inverse_tolerance = float(tolerance)
        self.inverse_max_iter = int(max_iter)
        self.log_det_mode = log_det
        self.log_det_kind = "exact" if log_det == "exact" else "estimated"
        self.log_det_terms = int(log_det_terms)
        self.inverse_cap_hits = 0
        self.last_inverse_iterations = 0

    # -- the residual function ----------------------------------------------------------------
    def g(self, x: Tensor) -> Tensor:
        """The residual branch ``g(x)``."""
        h = x
        for i, layer in enumerate(self.layers):
            if i:
                h = self.act(h)
            h = layer(h)
        return h

    def _g_and_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``g(x)`` and ``J_g(x)`` of shape ``(B, D, D)``, built layer by layer (vectors)."""
        h: Tensor = x
        jac: Tensor | None = None
        for i, layer in enumerate(cast("Sequence[SpectralLayer]", self.layers)):
            weight = layer.normalized_weight()
            if i:
                slope = self.act.derivative(h)
                h = self.act(h)
                jac = slope.unsqueeze(2) * cast(Tensor, jac)  # set by the previous layer
            h = F.linear(h, weight, layer.bias)
            jac = weight.expand(len(x), *weight.shape) if jac is None else weight @ jac
        return h, cast(Tensor, jac)  # a block has at least one layer

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.log_det_mode == "exact":
            gx, jac = self._g_and_jacobian(x)
            eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
            return x + gx, torch.linalg.slogdet(eye + jac)[1]
        return self._forward_series(x)

    def _forward_series(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x + g(x)`` and the Hutchinson power-series estimate of ``log det(I + J_g)``.

        Training (grad on): one pass, the estimate differentiable (``create_graph``), fresh
        Gaussian probes from the global RNG. Otherwise the output keeps the caller's autograd
        state and the estimate is computed on a detached copy with fixed-seed probes."""
        if self.training and torch.is_grad_enabled():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            gx = self.g(xg)
            return x + gx, self._series(gx, xg, torch.randn_like(x), create_graph=True)
        y = x + self.g(x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            gen = torch.Generator(device=x.device).manual_seed(0)
            v = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            log_det = self._series(self.g(xg), xg, v, create_graph=False)
        return y, log_det.detach()

    def _series(self, gx: Tensor, xg: Tensor, v: Tensor, create_graph: bool) -> Tensor:
        """``sum_{k=1}^{n} (-1)^{k+1} / k * v^T J^k v`` per sample, via vector-Jacobian products."""
        w, log_det = v, xg.new_zeros(xg.shape[0])
        for k in range(1, self.log_det_terms + 1):
            (w,) = torch.autograd.grad(gx, xg, w, create_graph=create_graph, retain_graph=True)
            log_det = log_det + (-1) ** (k + 1) / k * (w * v).flatten(1).sum(1)
        return log_det

    # -- inverse --------------------------------------------------------------------------------
    def solve_inverse(
        self, z: Tensor, *, tolerance: float | None = None, max_iter: int | None = None
    ) -> tuple[Tensor, Solve]:
        """Fixed point of ``x = z - g(x)`` from ``x_0 = z - g(z)``, per sample until every
        element moved by at most ``tol (1 + |z|)`` in one step (the block's own tolerance and
        cap unless given); the batch iterates until every sample stopped or the cap. A sample
        whose iterate turned non-finite stops, unconverged (:mod:`innaudit.model.iterative`)."""
        tol = self.inverse_tolerance if tolerance is None else float(tolerance)
        cap = self.inverse_max_iter if max_iter is None else int(max_iter)
        x = z - self.g(z)
        limit = tol * (1.0 + z.abs())
        pending = torch.ones(len(z), dtype=torch.bool, device=z.device)
        converged = torch.zeros_like(pending)
        iterations = torch.full((len(z),), cap, dtype=torch.long, device=z.device)
        steps = 0
        for steps in range(1, cap + 1):
            new = z - self.g(x)
            met = ((new - x).abs() <= limit).flatten(1).all(1)
            bad = ~torch.isfinite(new).flatten(1).all(1)
            stopped = pending & (met | bad)
            iterations[stopped] = steps
            converged |= pending & met & ~bad
            pending = pending & ~stopped
            x = new
            if not bool(pending.any()):
                break
        self.last_inverse_iterations = steps
        return x, Solve(iterations, converged, cap, tol, "fixed-point")

    def inverse(self, y: Tensor) -> Tensor:
        """Fixed point of ``x = y - g(x)``; counts samples stopped by the cap (see module doc)."""
        x, solve = self.solve_inverse(y)
        finite = torch.isfinite(x).flatten(1).all(1)
        self.inverse_cap_hits += int((~solve.converged & finite).sum())
        return x

    # -- certificates ---------------------------------------------------------------------------
    def lipschitz_coefficient(self) -> float:
        """Certified ``Lip(g)``: product of the exact spectral norms of the normalized weights
        times ``Lip(act)`` per activation."""
        norms = [float(layer.exact_norm()) for layer in cast("Sequence[SpectralLayer]", self.layers)]
        return math.prod(norms) * self.act.lipschitz ** (len(self.layers) - 1)

    def lipschitz_bounds(self) -> tuple[float, float]:
        """``(Lip(F), Lip(F^-1)) <= (1 + c, 1 / (1 - c))`` for the certified ``c``; the inverse
        bound is ``inf`` when ``c >= 1`` (not a contraction: no certificate)."""
        c = self.lipschitz_coefficient()
        return 1.0 + c, (1.0 / (1.0 - c) if c < 1.0 else math.inf)


class ResidualFlow(SequentialFlow):
    """A stack of :class:`ResidualBlock` (after optional shape-only layers), zoo contract."""

    inverse_kind = "iterative"

    def __init__(self, blocks: Sequence[nn.Module], tolerance: float, max_iter: int, log_det: str) -> None:
        super().__init__(blocks)
        self.inverse_tolerance = float(tolerance)
        self.inverse_max_iter = int(max_iter)
        self.log_det_kind = "exact" if log_det == "exact" else "estimated"

    def residual_blocks(self) -> list[ResidualBlock]:
        return [b for b in self.blocks if isinstance(b, ResidualBlock)]

    @property
    def inverse_cap_hits(self) -> int:
        """Cumulative (sample, block) inversions that stopped at the cap, over all blocks."""
        return sum(b.inverse_cap_hits for b in self.residual_blocks())

    @property
    def last_inverse_iterations(self) -> int:
        """Largest iteration count of any block in the last ``inverse`` call."""
        return max((b.last_inverse_iterations for b in self.residual_blocks()), default=0)

    @torch.no_grad()
    def calibrate(self) -> None:
        """Exact spectral norms into every layer's ``sigma`` (call before saving)."""
        for module in self.modules():
            if isinstance(module, SpectralLayer):
                module.calibrate()

    def lipschitz_bounds(self) -> tuple[float, float]:
        """Product of the per-block certified bounds: ``(prod (1 + c_i), prod 1 / (1 - c_i))``."""
        forward, inverse = 1.0, 1.0
        for block in self.residual_blocks():
            f, i = block.lipschitz_bounds()
            forward, inverse = forward * f, inverse * i
        return forward, inverse


def _check_common(coeff: float, tolerance: float, max_iter: int) -> None:
    if not 0.0 < coeff < 1.0:
        raise ValueError(f"coeff must be in (0, 1) for an invertible residual block; got {coeff}")
    if not tolerance > 0 or int(max_iter) < 1:
        raise ValueError(f"tolerance must be > 0 and max_iter >= 1; got {tolerance}, {max_iter}")


@register("residual-vector")
class ResidualVector(ResidualFlow):
    """i-ResNet on flat vectors ``(D,)``: ``blocks`` residual MLP blocks.

    Args:
        shape: ``[D]``.
        blocks: number of residual blocks.
        hidden: width of the hidden layers of each ``g``.
        depth: number of linear layers in each ``g`` (>= 2).
        coeff: spectral coefficient ``c < 1`` of every linear layer (``Lip(g) <= c^depth``).
        power_iterations: power-iteration steps per training call.
        tolerance, max_iter: fixed-point inverse stopping rule and cap.
        log_det: ``"exact"`` (slogdet of the analytic Jacobian) or ``"series"``.
        log_det_terms: power-series terms for ``"series"``.
        seed: seed of the local generator that initializes the parameters.
    """

    def __init__(
        self,
        shape: Sequence[int] = (2,),
        blocks: int = 8,
        hidden: int = 64,
        depth: int = 3,
        coeff: float = 0.9,
        power_iterations: int = 5,
        tolerance: float = 1e-6,
        max_iter: int = 1000,
        log_det: str = "exact",
        log_det_terms: int = 10,
        seed: int = 0,
    ) -> None:
        _check_common(coeff, tolerance, max_iter)
        if len(shape) != 1 or int(shape[0]) < 1 or int(depth) < 2:
            raise ValueError(f"residual-vector needs shape [D] and depth >= 2; got {list(shape)}, {depth}")
        gen = torch.Generator().manual_seed(int(seed))
        dim = int(shape[0])
        sizes = [dim] + [int(hidden)] * (int(depth) - 1) + [dim]
        made = []
        for _ in range(int(blocks)):
            layers = [
                SpectralLinear(a, b, coeff, power_iterations, gen, zero=(i == len(sizes) - 2))
                for i, (a, b) in enumerate(itertools.pairwise(sizes))
            ]
            made.append(ResidualBlock(layers, tolerance, max_iter, log_det, log_det_terms))
        super().__init__(made, tolerance, max_iter, log_det)


@register("residual-image")
class ResidualImage(ResidualFlow):
    """i-ResNet on images ``(C, H, W)`` (H, W even): a squeeze, then residual conv blocks
    ``g = conv3x3 -> LipSwish -> conv1x1 -> LipSwish -> conv3x3``, log-det by the power series.

    The latent keeps the squeezed shape ``(4C, H/2, W/2)``. Arguments as for
    :class:`ResidualVector`, with ``hidden`` the conv width; the log-det is always
    ``"series"`` (estimated).
    """

    def __init__(
        self,
        shape: Sequence[int] = (1, 8, 8),
        blocks: int = 8,
        hidden: int = 32,
        coeff: float = 0.9,
        power_iterations: int = 5,
        tolerance: float = 1e-6,
        max_iter: int = 1000,
        log_det_terms: int = 8,
        seed: int = 0,
    ) -> None:
        _check_common(coeff, tolerance, max_iter)
        if len(shape) != 3 or int(shape[1]) % 2 or int(shape[2]) % 2:
            raise ValueError(f"residual-image needs shape [C, H, W] with even H, W; got {list(shape)}")
        gen = torch.Generator().manual_seed(int(seed))
        channels, spatial = 4 * int(shape[0]), (int(shape[1]) // 2, int(shape[2]) // 2)
        made: list[nn.Module] = [Squeeze2d()]
        for _ in range(int(blocks)):
            layers = [
                SpectralConv2d(channels, hidden, 3, spatial, coeff, power_iterations, gen),
                SpectralConv2d(hidden, hidden, 1, spatial, coeff, power_iterations, gen),
                SpectralConv2d(hidden, channels, 3, spatial, coeff, power_iterations, gen, zero=True),
            ]
            made.append(ResidualBlock(layers, tolerance, max_iter, "series", log_det_terms))
        super().__init__(made, tolerance, max_iter, "series")
