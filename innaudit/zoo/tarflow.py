"""``tarflow``: a transformer autoregressive flow on image patches (TarFlow, with STARFlow's guards).

TarFlow (Zhai et al., "Normalizing Flows are Capable Generative Models", 2024,
https://arxiv.org/abs/2412.06329) cuts an image ``(C, H, W)`` into ``T = (H/p)(W/p)`` patches of
``D = C p^2`` values (:class:`Patchify`, ``F.unfold``) and stacks :class:`TarFlowBlock` s. Block
``k`` reads the tokens in its own order (raster for even ``k``, reversed for odd ``k``) and maps
token ``t`` of ``x`` to ``z_t = (x_t - b_t) * exp(-a_t)``, where ``(a_t, b_t)`` is predicted
from the tokens before it by a causal transformer (:mod:`innaudit.zoo.transformer`); token 0
passes unchanged. So ``log|det| = -sum_t sum_d a_{t,d}`` (a sum here; TarFlow's code returns the
mean over ``T D``). The inverse is sequential: ``x_{t+1} = z_{t+1} * exp(a_{t+1}) + b_{t+1}``
with ``(a_{t+1}, b_{t+1})`` computed from the already inverted ``x_0..x_t`` by the cached
single-token pass. Forward and inverse take different code paths.

STARFlow (Gu et al., "STARFlow: Scaling Latent Normalizing Flows for High-resolution Image
Synthesis", 2025, https://arxiv.org/abs/2506.06276) adds guards, both options here:

- ``soft_clip = c > 0``: the transformer's output is ``c * tanh(out / c)`` (STARFlow's 3B
  model uses ``c = 4``), so shift and log-scale input are bounded;
- ``scale = "softplus"``: the inverse's per-step scale is ``sigma = softplus(u + 0.5413)``
  (1 at ``u = 0``) instead of ``exp(u)``; with ``c = 4`` it lies in about ``(0.031, 4.55)``;
- ``inverse = "jacobi"``: the inverse as a fixed point, ``x^{i+1} = z * sigma(x^i) + b(x^i)``
  from ``x^0 = z``, all tokens at once through the masked pass, stopped when the relative
  change ``mean((x^{i+1} - x^i)^2) / mean((x^{i+1})^2)`` drops below ``jacobi_tol`` (STARFlow's
  ``jacobi_th``, 1e-3) or after ``jacobi_max_iter`` iterations (32). After ``i`` iterations
  tokens ``0..i`` are exact, so ``T - 1`` iterations always reach the sequential inverse; a
  cap below that may stop short. The block implements
  :class:`~innaudit.model.iterative.IterativeInverse`, so the stop is reported, never silent.

The prior is ``N(0, diag(var))`` with ``var`` a ``(T, D)`` buffer of ones (TarFlow's "NVP"
mode); with ``prior = "learned"`` (its "VP" mode) the recipe moves ``var`` towards the mean
squared latent (:meth:`TarFlow.update_prior`), and :meth:`TarFlow.sample_prior` scales standard
normal noise by ``sqrt(var)``. ``forward`` maps data to ``z`` itself (not ``z / sqrt(var)``),
so the exact round trip is ``inverse(forward(x))``.

Every block implements :class:`~innaudit.model.autoregressive.AutoregressiveBlock` (token order,
the masked path's ``(a, b)``, the sequential inverse), which the ``tokens`` audit reads.
Parameters come from a local generator seeded with ``seed`` (the global RNG is untouched).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innaudit.model.iterative import Solve
from innaudit.zoo import register
from innaudit.zoo.flow import SequentialFlow
from innaudit.zoo.transformer import CausalTransformer, _init_linear, wide

__all__ = [
    "INV_SOFTPLUS_1",
    "PATCHES_ARCHITECTURE",
    "SCALES",
    "JacobiTarFlowBlock",
    "Patchify",
    "TarFlow",
    "TarFlowBlock",
    "tarflow_config",
]

INV_SOFTPLUS_1 = math.log(math.e - 1.0)
"""``softplus^-1(1) = log(e - 1)``: the softplus scale is 1 where the network outputs 0."""

SCALES = ("exp", "softplus")
INVERSES = ("sequential", "jacobi")


class Patchify(nn.Module):
    """``(B, C, H, W) -> (B, T, C p^2)``: non-overlapping ``p x p`` patches in raster order
    (``F.unfold``), log-det 0; the inverse is ``F.fold``. A permutation of the entries: exact."""

    def __init__(self, shape: Sequence[int], patch: int) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.patch = int(patch)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        tokens = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)
        return tokens, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.fold(y.transpose(1, 2), self.shape[1:], self.patch, stride=self.patch)


def _log_softplus(v: Tensor) -> Tensor:
    """``log(softplus(v))``, exact where ``softplus`` underflows (``log softplus(v) -> v``)."""
    return torch.where(v < -20.0, v, F.softplus(v).log())


class TarFlowBlock(nn.Module):
    """One autoregressive affine block over ``(B, T, D)`` tokens (see the module docstring).

    Args:
        tokens: ``T``; dim: ``D``; hidden: transformer width; layers, heads, expansion: its size.
        flip: read the tokens in reverse order (TarFlow alternates identity and flip).
        scale: ``"exp"`` (TarFlow) or ``"softplus"`` (STARFlow).
        soft_clip: ``c > 0`` bounds the transformer's output by ``c * tanh(out / c)``; 0: none.
        jacobi_tol, jacobi_max_iter: the stop threshold and iteration cap of
            :class:`JacobiTarFlowBlock` (this class inverts sequentially).
        generator: draws the initial parameters.
    """

    inverse_kind = "analytic"
    log_det_kind = "exact"
    order: Tensor
    back: Tensor

    def __init__(
        self,
        tokens: int,
        dim: int,
        hidden: int,
        layers: int,
        heads: int,
        expansion: int,
        flip: bool,
        scale: str,
        soft_clip: float,
        jacobi_tol: float,
        jacobi_max_iter: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.tokens, self.dim = int(tokens), int(dim)
        self.scale, self.soft_clip = scale, float(soft_clip)
        self.jacobi_tol, self.jacobi_max_iter = float(jacobi_tol), int(jacobi_max_iter)
        order = torch.arange(tokens - 1, -1, -1) if flip else torch.arange(tokens)
        self.register_buffer("order", order)
        self.register_buffer("back", torch.argsort(order))
        self.proj_in = nn.Linear(dim, hidden)
        _init_linear(self.proj_in, generator)
        self.pos = nn.Parameter(torch.randn(tokens, hidden, generator=generator) * 1e-2)
        self.transformer = CausalTransformer(hidden, layers, heads, expansion, generator)
        self.proj_out = nn.Linear(hidden, 2 * dim)
        nn.init.zeros_(self.proj_out.weight)  # the identity at the start, as TarFlow
        nn.init.zeros_(self.proj_out.bias)

    # -- the two paths ---------------------------------------------------------------------
    def _affine(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """``(log sigma, b)`` from the output head, in at least float32."""
        out = wide(out)
        if self.soft_clip > 0:
            out = self.soft_clip * torch.tanh(out / self.soft_clip)
        u, b = out.chunk(2, dim=-1)
        if self.scale == "softplus":
            return _log_softplus(u + INV_SOFTPLUS_1), b
        return u, b

    def _masked(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)`` of every token of ``xp`` (in block order) by the masked pass; token 0's
        are zero (it has nothing before it)."""
        out = self.proj_out(self.transformer(self.proj_in(xp) + self.pos.to(xp.dtype)))
        out = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
        return self._affine(out)

    def token_order(self) -> Tensor:
        """Sequence position of the token this block inverts at each step ``(T,)``."""
        return self.order

    def affine_params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)`` of the masked pass on input ``h`` ``(B, T, D)``, in block order: the
        inverse multiplies token ``t`` by ``exp(a_t)`` and adds ``b_t``."""
        return self._masked(h[:, self.order])

    def scales(self, h: Tensor) -> Tensor:
        """The forward's per-element factor ``exp(-a)`` in sequence order (the inverse divides by it)."""
        a, _ = self.affine_params(h)
        return torch.exp(-a)[:, self.back]

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, log|det|)`` with ``z_t = (h_t - b_t) exp(-a_t)`` and ``log|det| = -sum a``."""
        xp = h[:, self.order]
        a, b = self._masked(xp)
        z = ((wide(xp) - b) * torch.exp(-a)).to(h.dtype)
        return z[:, self.back], -a.flatten(1).sum(1).to(h.dtype)

    def sequential_inverse(self, z: Tensor) -> Tensor:
        """The cached token-by-token inverse: ``x_0 = z_0``, then for ``t = 0..T-2`` one step
        of the transformer on ``x_t`` (attending to the cached ``x_0..x_{t-1}``) gives
        ``(a_{t+1}, b_{t+1})`` and ``x_{t+1} = z_{t+1} exp(a_{t+1}) + b_{t+1}``."""
        zp = z[:, self.order]
        caches = self.transformer.caches()
        xs = [zp[:, 0]]
        for t in range(self.tokens - 1):
            h = self.proj_in(xs[t][:, None]) + self.pos[t : t + 1].to(zp.dtype)
            a, b = self._affine(self.proj_out(self.transformer.step(h, caches)))
            xs.append((wide(zp[:, t + 1]) * torch.exp(a[:, 0]) + b[:, 0]).to(z.dtype))
        return torch.stack(xs, dim=1)[:, self.back]

    def inverse(self, z: Tensor) -> Tensor:
        """The block's inverse: the sequential pass."""
        return self.sequential_inverse(z)

    def extra_repr(self) -> str:
        flipped = bool(self.order[0] != 0) if self.tokens > 1 else False
        return f"tokens={self.tokens}, dim={self.dim}, flip={flipped}, scale={self.scale}, soft_clip={self.soft_clip:g}"


class JacobiTarFlowBlock(TarFlowBlock):
    """A :class:`TarFlowBlock` inverted by STARFlow's Jacobi iteration (see the module
    docstring); it declares the iterative inverse through
    :class:`~innaudit.model.iterative.IterativeInverse`."""

    inverse_kind = "iterative"

    @property
    def inverse_tolerance(self) -> float:
        return self.jacobi_tol

    @property
    def inverse_max_iter(self) -> int:
        return self.jacobi_max_iter

    def solve_inverse(
        self, z: Tensor, *, tolerance: float | None = None, max_iter: int | None = None
    ) -> tuple[Tensor, Solve]:
        """The Jacobi inverse (see the module docstring) with this block's settings, or
        ``tolerance`` / ``max_iter`` for this call only; per sample, the iterations used and
        whether the relative change fell below the tolerance within the cap. A sample stops
        iterating once it has converged."""
        tol = self.jacobi_tol if tolerance is None else float(tolerance)
        cap = self.jacobi_max_iter if max_iter is None else int(max_iter)
        if cap < 1:
            raise ValueError(f"jacobi max_iter is {cap}; expected at least 1")
        zp = z[:, self.order]
        x = zp
        done = torch.zeros(len(z), dtype=torch.bool, device=z.device)
        iterations = torch.zeros(len(z), dtype=torch.long, device=z.device)
        for _ in range(cap):
            a, b = self._masked(x)
            new = (wide(zp) * torch.exp(a) + b).to(z.dtype)
            change = (new - x).flatten(1).pow(2).mean(1) / new.flatten(1).pow(2).mean(1).clamp_min(1e-30)
            x = torch.where(done[:, None, None], x, new)
            iterations = iterations + (~done).long()
            done = done | (change < tol)
            if bool(done.all()):
                break
        return x[:, self.back], Solve(iterations, done, cap, tol, "jacobi")

    def inverse(self, z: Tensor) -> Tensor:
        """The block's inverse: the Jacobi solve with the block's own settings."""
        return self.solve_inverse(z)[0]


def _check(shape: Sequence[int], patch: int, scale: str, inverse: str, soft_clip: float, jacobi_tol: float) -> None:
    if len(shape) != 3 or any(int(s) % patch for s in shape[1:]):
        raise ValueError(f"tarflow needs shape [C, H, W] with H, W divisible by patch={patch}; got {list(shape)}")
    if scale not in SCALES:
        raise ValueError(f"tarflow scale {scale!r} is unknown; expected {' or '.join(SCALES)}")
    if inverse not in INVERSES:
        raise ValueError(f"tarflow inverse {inverse!r} is unknown; expected {' or '.join(INVERSES)}")
    if not (math.isfinite(soft_clip) and soft_clip >= 0):
        raise ValueError(f"tarflow soft_clip is {soft_clip!r}; expected 0 (none) or a positive bound")
    if not (math.isfinite(jacobi_tol) and jacobi_tol > 0):
        raise ValueError(f"tarflow jacobi_tol is {jacobi_tol!r}; expected a positive number")


@register("tarflow")
class TarFlow(SequentialFlow):
    """TarFlow / STARFlow on images ``(C, H, W)``: :class:`Patchify` then ``blocks`` blocks.

    Args:
        shape: ``[C, H, W]`` with ``H`` and ``W`` divisible by ``patch``.
        patch: patch side ``p``.
        hidden, layers, heads, expansion: the transformer of every block.
        blocks: number of autoregressive blocks (orders alternate raster, reversed).
        scale, soft_clip, inverse, jacobi_tol, jacobi_max_iter: see :class:`TarFlowBlock`.
        prior: ``"fixed"`` (``var`` stays 1, TarFlow's NVP mode) or ``"learned"`` (VP mode).
        seed: seeds the local generator of the initial parameters.
    """

    log_det_kind = "exact"
    var: Tensor

    def __init__(
        self,
        shape: Sequence[int] = (3, 32, 32),
        patch: int = 4,
        hidden: int = 64,
        blocks: int = 4,
        layers: int = 2,
        heads: int = 4,
        expansion: int = 4,
        scale: str = "exp",
        soft_clip: float = 0.0,
        inverse: str = "sequential",
        jacobi_tol: float = 1e-3,
        jacobi_max_iter: int = 32,
        prior: str = "fixed",
        seed: int = 0,
    ) -> None:
        _check(shape, patch, scale, inverse, float(soft_clip), float(jacobi_tol))
        if prior not in ("fixed", "learned"):
            raise ValueError(f"tarflow prior {prior!r} is unknown; expected fixed or learned")
        channels, height, width = (int(s) for s in shape)
        tokens, dim = (height // patch) * (width // patch), channels * patch * patch
        generator = torch.Generator().manual_seed(int(seed))
        made: list[nn.Module] = [Patchify(shape, patch)]
        for k in range(blocks):
            made.append(
                (JacobiTarFlowBlock if inverse == "jacobi" else TarFlowBlock)(
                    tokens,
                    dim,
                    hidden,
                    layers,
                    heads,
                    expansion,
                    k % 2 == 1,
                    scale,
                    soft_clip,
                    jacobi_tol,
                    jacobi_max_iter,
                    generator,
                )
            )
        super().__init__(made)
        self.input_shape = (channels, height, width)
        self.prior = prior
        # the iterative-inverse declaration the loader reads (every block shares the settings)
        self.inverse_kind = "iterative" if inverse == "jacobi" else "analytic"
        self.inverse_tolerance = float(jacobi_tol) if inverse == "jacobi" else None
        self.inverse_max_iter = int(jacobi_max_iter) if inverse == "jacobi" else None
        self.block_names = [f"patchify {patch}x{patch}"] + [f"AR block {k}" for k in range(blocks)]
        self.register_buffer("var", torch.ones(tokens, dim))

    def sample_prior(self, eps: Tensor, temperature: float) -> Tensor:
        """A prior draw ``temperature * sqrt(var) * eps`` from standard normal ``eps`` ``(B, T, D)``."""
        return temperature * eps.reshape(len(eps), *self.var.shape) * self.var.sqrt().to(eps.dtype)

    @torch.no_grad()
    def update_prior(self, z: Tensor, rate: float = 0.1) -> None:
        """VP mode: move ``var`` towards the batch's mean squared latent by ``rate`` (TarFlow's
        ``update_prior``); a fixed prior is left alone."""
        if self.prior == "learned":
            self.var.lerp_(z.detach().pow(2).mean(0).to(self.var.dtype), rate)


PATCHES_ARCHITECTURE: dict[str, object] = {
    "shape": [3, 32, 32],
    "patch": 4,
    "hidden": 64,
    "blocks": 4,
    "layers": 2,
    "heads": 4,
    "expansion": 4,
    "inverse": "sequential",
    "jacobi_tol": 1e-3,
    "jacobi_max_iter": 32,
    "prior": "fixed",
}
"""The shipped ``patches-tarflow`` architecture but its scale (the recipes pick the scale)."""


def tarflow_config(**overrides: object) -> dict[str, object]:
    """The shipped ``patches-tarflow`` architecture (softplus scale, soft clip 4) with ``overrides``."""
    return {**PATCHES_ARCHITECTURE, "scale": "softplus", "soft_clip": 4.0, **overrides}
