"""A small causal transformer with two paths: the masked pass and the cached single-token step.

The blocks of :mod:`innaudit.zoo.tarflow` predict token ``t + 1`` from tokens ``0..t`` with a
causal transformer (Zhai et al., "Normalizing Flows are Capable Generative Models", 2024,
https://arxiv.org/abs/2412.06329). The forward flow runs it once over the whole sequence with a
causal mask; the inverse runs it one token at a time, each step attending to the keys and values
of the tokens before it, kept in a cache. The two paths compute the same function in exact
arithmetic and differ in rounding: that difference is one of the things the ``tokens`` audit
measures.

Each layer is pre-norm: ``h + attn(norm(h))`` then ``h + mlp(norm(h))`` (GELU MLP). Norms and
the softmax run in at least float32 (a bfloat16 input under ``torch.autocast`` is widened),
as TarFlow's code does; float64 stays float64.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalTransformer", "LayerCache", "wide"]


def wide(x: Tensor) -> Tensor:
    """``x`` in at least float32 (float16 and bfloat16 are widened, float64 is kept)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _init_linear(layer: nn.Linear, generator: torch.Generator, gain: float = 1.0) -> None:
    """Uniform ``+-gain / sqrt(fan_in)`` weights and zero bias, drawn from ``generator``."""
    bound = gain / layer.in_features**0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()


class LayerCache:
    """The keys and values ``(B, heads, 1, head_dim)`` one attention layer has seen so far, one
    entry per token (a list, so the cached pass stays differentiable: nothing is written in place)."""

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []

    def add(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append one token's ``k``, ``v``; all keys and values so far ``(B, heads, t + 1, head_dim)``."""
        self.keys.append(k)
        self.values.append(v)
        return torch.cat(self.keys, 2), torch.cat(self.values, 2)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v``, the softmax in at least float32, masked where ``mask`` is
    False. Written out (TarFlow's einsum path) rather than a fused kernel, so that every
    derivative the Jacobian audits take (forward mode, double backward) exists."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return wide(scores).softmax(dim=-1).to(v.dtype) @ v


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, generator: torch.Generator) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"transformer width {width} is not divisible by heads={heads}")
        self.heads = heads
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        _init_linear(self.qkv, generator)
        _init_linear(self.out, generator)

    def _qkv(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, w = h.shape
        normed = self.norm(wide(h)).to(h.dtype)
        q, k, v = self.qkv(normed).reshape(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _merge(self, a: Tensor) -> Tensor:
        b, heads, t, d = a.shape
        return self.out(a.transpose(1, 2).reshape(b, t, heads * d))

    def forward(self, h: Tensor) -> Tensor:
        """Masked self-attention over the whole sequence ``(B, T, W)``."""
        q, k, v = self._qkv(h)
        t = h.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
        return self._merge(_attend(q, k, v, causal))

    def step(self, h: Tensor, cache: LayerCache) -> Tensor:
        """One token ``(B, 1, W)`` attending to itself and the cached tokens before it."""
        q, k, v = self._qkv(h)
        keys, values = cache.add(k, v)
        return self._merge(_attend(q, keys, values, None))


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int, expansion: int, generator: torch.Generator) -> None:
        super().__init__()
        self.attention = _Attention(width, heads, generator)
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, width * expansion)
        self.down = nn.Linear(width * expansion, width)
        _init_linear(self.up, generator)
        _init_linear(self.down, generator)

    def _mlp(self, h: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(self.norm(wide(h)).to(h.dtype))))

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.attention(h)
        return h + self._mlp(h)

    def step(self, h: Tensor, cache: LayerCache) -> Tensor:
        h = h + self.attention.step(h, cache)
        return h + self._mlp(h)


class CausalTransformer(nn.Module):
    """``layers`` pre-norm transformer layers of width ``width`` with ``heads`` heads.

    ``forward(h)`` is the masked pass over ``(B, T, W)``; ``step(h, caches)`` the cached pass of
    one token ``(B, 1, W)`` (``caches`` from :meth:`caches`, one per layer, filled in order).
    """

    def __init__(self, width: int, layers: int, heads: int, expansion: int, generator: torch.Generator) -> None:
        super().__init__()
        self.heads = heads
        self.layers = nn.ModuleList([_Layer(width, heads, expansion, generator) for _ in range(layers)])

    def forward(self, h: Tensor) -> Tensor:
        for layer in self.layers:
            h = layer(h)
        return h

    def caches(self) -> list[LayerCache]:
        """Empty caches, one per layer."""
        return [LayerCache() for _ in self.layers]

    def step(self, h: Tensor, caches: list[LayerCache]) -> Tensor:
        for layer, cache in zip(self.layers, caches, strict=True):
            h = cast(_Layer, layer).step(h, cache)
        return h
