"""Known-answer models for the gradient audit, and factories for ``innaudit run FILE:NAME``.

Only torch is imported here, so the CLI can load this file by path from anywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Coupling(nn.Module):
    """Affine (or additive) coupling on a vector: ``y2 = x2 * exp(s(x1)) + t(x1)``.

    ``factor`` multiplies the reconstructed ``x2`` of the inverse: 1 is exact, anything else is
    an inverse off by that known factor.
    """

    def __init__(
        self, dim: int, hidden: int, seed: int, flip: bool, affine: bool = True, batchnorm: bool = False
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.half, self.flip, self.affine, self.factor = dim // 2, flip, affine, 1.0
        layers: list[nn.Module] = [nn.Linear(self.half, hidden)]
        layers += [nn.BatchNorm1d(hidden)] if batchnorm else []
        layers += [nn.Tanh(), nn.Linear(hidden, 2 * (dim - self.half))]
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[:, : self.half], x[:, self.half :]
        return (b, a) if self.flip else (a, b)

    def _join(self, x1: Tensor, x2: Tensor) -> Tensor:
        return torch.cat([x2, x1] if self.flip else [x1, x2], 1)

    def _st(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(x1).chunk(2, 1)
        return (torch.tanh(s) if self.affine else torch.zeros_like(s)), t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = self._split(x)
        s, t = self._st(x1)
        return self._join(x1, x2 * s.exp() + t), s.sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y1, y2 = self._split(y)
        s, t = self._st(y1)
        return self._join(y1, (y2 - t) * (-s).exp() * self.factor)


class Chain(nn.Module):
    """A chain of blocks with the zoo contract: ``forward -> (z, sum of log-dets)``, ``inverse``."""

    input_shape = (6,)
    data_range = (-1.0, 1.0)

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ld = x.new_zeros(len(x))
        for b in self.blocks:
            x, d = b(x)
            ld = ld + d
        return x, ld

    def inverse(self, z: Tensor) -> Tensor:
        for b in reversed(self.blocks):
            z = b.inverse(z)
        return z


def couplings(
    n: int = 4, affine: bool = True, off: int | None = None, factor: float = 1.0, batchnorm_at: int | None = None
) -> Chain:
    """``n`` couplings on 6-D vectors, halves alternating; block ``off``'s inverse is off by ``factor``."""
    chain = Chain(
        [Coupling(6, 16, seed=k, flip=bool(k % 2), affine=affine, batchnorm=k == batchnorm_at) for k in range(n)]
    )
    if off is not None:
        chain.blocks[off].factor = factor
    return chain


def additive() -> nn.Module:
    """An exact model: additive couplings."""
    return couplings(affine=False)


def off_by_factor() -> nn.Module:
    """Affine couplings; block 2's inverse reconstructs ``x2`` 5 % too large."""
    return couplings(off=2, factor=1.05)


def with_loss() -> nn.Module:
    """Affine couplings that bring their own loss, ``mean ||z||_1``."""
    model = couplings()
    model.gradient_loss = lambda z, log_det, x: z.abs().sum(1).mean()  # type: ignore[assignment]
    return model


class Diagonal(nn.Module):
    """``y = a * x`` elementwise with a parameter ``a``; the inverse is ``factor * y / a``."""

    def __init__(self, a: Tensor, factor: float = 1.0) -> None:
        super().__init__()
        self.a, self.factor = nn.Parameter(a.clone()), factor

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * self.a, self.a.abs().log().sum().expand(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return self.factor * y / self.a


class _Checkpoint(torch.autograd.Function):
    """memcnn's ``InvertibleCheckpointFunction`` in brief: the forward keeps only the output; the
    backward rebuilds the input with ``fn.inverse`` and writes it into the input tensor (which is
    the previous block's kept output, as in memcnn, so the error travels down the chain), then
    re-runs ``fn`` and differentiates it."""

    @staticmethod
    def forward(ctx, fn: nn.Module, x: Tensor, *weights: Tensor) -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            y = fn(x.detach())
        ctx.fn, ctx.weights, ctx.x, ctx.y = fn, weights, x, y
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if not torch.autograd._is_checkpoint_valid():
            raise RuntimeError("not compatible with .grad(), please use .backward()")
        with torch.no_grad():
            ctx.x.set_(ctx.fn.inverse(ctx.y))
        with torch.enable_grad():
            x = ctx.x.detach().requires_grad_()
            out = ctx.fn(x)
        grads = torch.autograd.grad(out, (x, *ctx.weights), grad_y, allow_unused=True)
        return (None, *grads)


class InvertibleModuleWrapper(nn.Module):
    """A faithful minimal ``memcnn.InvertibleModuleWrapper`` (same class name, ``_fn`` and
    ``disable``), for the tests where memcnn is not installed."""

    def __init__(self, fn: nn.Module, disable: bool = False) -> None:
        super().__init__()
        self._fn, self.disable = fn, disable

    def forward(self, x: Tensor) -> Tensor:
        if self.disable:
            return self._fn(x)
        return _Checkpoint.apply(self._fn, x, *[p for p in self._fn.parameters() if p.requires_grad])

    def inverse(self, y: Tensor) -> Tensor:
        return self._fn.inverse(y)


class AdditiveHalf(nn.Module):
    """memcnn-style additive coupling ``(x1, x2 + F(x1))`` (no log-det); ``factor`` scales the
    inverse's whole output (1: exact)."""

    def __init__(self, seed: int, factor: float = 1.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net, self.factor = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)), factor
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x[:, :3], x[:, 3:] + self.net(x[:, :3])], 1)

    def inverse(self, y: Tensor) -> Tensor:
        return torch.cat([y[:, :3], y[:, 3:] - self.net(y[:, :3])], 1) * self.factor


class WrappedChain(nn.Module):
    """Wrapped couplings, the swap of halves between them left to the net (plain forward/inverse)."""

    input_shape = (6,)
    data_range = (-1.0, 1.0)

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return x

    def inverse(self, z: Tensor) -> Tensor:
        for b in reversed(self.blocks):
            z = b.inverse(z)
        return z


def memcnn_like(broken: bool = False) -> nn.Module:
    """Three wrapped additive couplings; with ``broken``, block 1's inverse is 10 % too large."""
    return WrappedChain([InvertibleModuleWrapper(AdditiveHalf(k, 1.1 if broken and k == 1 else 1.0)) for k in range(3)])
