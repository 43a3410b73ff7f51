"""Autoregressive token blocks whose failures are known in advance, for the ``tokens`` audit.

Each block maps a sequence ``(B, T, D)`` token by token in its own order and implements
:class:`innaudit.model.autoregressive.AutoregressiveBlock` directly (no transformer), so where
its inverse breaks follows from its formula:

- :class:`GainBlock`: ``a_t = alpha * x_{t-1, 0}`` for steps ``t >= start`` (0 before), ``b = 0``.
  Before ``start`` the block is the identity (exact); from ``start`` on, an error in token
  ``t - 1`` changes ``a_t`` by ``alpha`` times itself, so the inverse's error grows by about
  ``alpha * x`` per step: the accumulated error leaves rounding a few steps after ``start``.
- :class:`CacheBugBlock`: ``a = 0``, ``b_t = shift`` for ``t >= 1``; its sequential inverse adds
  ``bug`` to every token from step 1 on (a wrong cached value), so the masked forward of that
  inverse is off by exactly ``bug`` per element.

Factories (``file.py:NAME``): ``amplifying``, ``amplifying_flipped``, ``cache_bug``,
``jacobi_capped`` and ``jacobi_converging`` (zoo TarFlows inverted by Jacobi sweeps), ``plain``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from innaudit import zoo
from innaudit.zoo.flow import SequentialFlow
from innaudit.zoo.tarflow import tarflow_config

TOKENS, DIM = 16, 4


class _Tokens(nn.Module):
    """The order bookkeeping every test block shares."""

    log_det_kind = "exact"

    def __init__(self, flip: bool) -> None:
        super().__init__()
        order = torch.arange(TOKENS - 1, -1, -1) if flip else torch.arange(TOKENS)
        self.register_buffer("order", order)
        self.register_buffer("back", torch.argsort(order))

    def token_order(self) -> Tensor:
        return self.order

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        xp = h[:, self.order]
        a, b = self.affine_params(h)
        return ((xp - b) * torch.exp(-a))[:, self.back], -a.flatten(1).sum(1)

    def inverse(self, z: Tensor) -> Tensor:
        return self.sequential_inverse(z)


class GainBlock(_Tokens):
    def __init__(self, start: int, alpha: float, flip: bool = False) -> None:
        super().__init__(flip)
        self.start, self.alpha = start, alpha

    def _a(self, previous: Tensor, t: int) -> Tensor:
        return (self.alpha * previous[..., :1]).expand_as(previous) if t >= self.start else torch.zeros_like(previous)

    def affine_params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        xp = h[:, self.order]
        a = torch.stack([torch.zeros_like(xp[:, 0])] + [self._a(xp[:, t - 1], t) for t in range(1, TOKENS)], 1)
        return a, torch.zeros_like(a)

    def sequential_inverse(self, z: Tensor) -> Tensor:
        zp = z[:, self.order]
        xs = [zp[:, 0]]
        for t in range(1, TOKENS):
            xs.append(zp[:, t] * torch.exp(self._a(xs[t - 1], t)))
        return torch.stack(xs, 1)[:, self.back]


class CacheBugBlock(_Tokens):
    def __init__(self, shift: float, bug: float) -> None:
        super().__init__(False)
        self.shift, self.bug = shift, bug

    def affine_params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        b = torch.full_like(h, self.shift)
        b[:, 0] = 0.0
        return torch.zeros_like(h), b

    def sequential_inverse(self, z: Tensor) -> Tensor:
        x = z.clone()
        x[:, 1:] = z[:, 1:] + self.shift + self.bug
        return x


class TokenFlow(SequentialFlow):
    """Blocks over ``(T, D)`` sequences in ``[0, 1]``."""

    input_shape = (TOKENS, DIM)
    data_range = (0.0, 1.0)


def amplifying() -> TokenFlow:
    """An identity block, then a :class:`GainBlock` that starts amplifying at step 6."""
    return TokenFlow([GainBlock(TOKENS, 0.0), GainBlock(6, 20.0)])


def amplifying_flipped() -> TokenFlow:
    """The same with the amplifying block reading the tokens in reverse order."""
    return TokenFlow([GainBlock(TOKENS, 0.0), GainBlock(6, 20.0, flip=True)])


def cache_bug() -> TokenFlow:
    return TokenFlow([CacheBugBlock(0.5, 1e-3)])


def plain() -> TokenFlow:
    """Two blocks that are exactly the identity."""
    return TokenFlow([GainBlock(TOKENS, 0.0), GainBlock(TOKENS, 0.0, flip=True)])


def jacobi_config(cap: int, tol: float) -> dict[str, Any]:
    """The zoo ``tarflow`` config of :func:`jacobi_capped` / :func:`jacobi_converging`."""
    config = tarflow_config(
        shape=[3, 8, 8], patch=2, hidden=16, heads=2, blocks=2, layers=1, inverse="jacobi", jacobi_tol=tol
    )
    return {**config, "jacobi_max_iter": cap}


def _jacobi_tarflow(cap: int, tol: float) -> nn.Module:
    model = zoo.build("tarflow", jacobi_config(cap, tol))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in list(model.blocks)[1:]:
            head = block.proj_out
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.2)
    model.data_range = (0.0, 1.0)
    return model


def jacobi_capped() -> nn.Module:
    """16 tokens, Jacobi capped at 2 sweeps with a 1e-12 stop: it cannot converge."""
    return _jacobi_tarflow(2, 1e-12)


def jacobi_converging() -> nn.Module:
    """The same weights with 20 sweeps allowed (16 tokens need at most 16)."""
    return _jacobi_tarflow(20, 1e-12)
