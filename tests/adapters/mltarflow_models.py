"""A model in the apple/ml-tarflow calling convention, written for the tests.

It mimics the public API of that repository's ``transformer_flow.Model`` (not its code):
``Model(in_channels, img_size, patch_size, channels, num_blocks, layers_per_block, nvp=True)``;
``forward(x, y=None) -> (z, outputs, logdets)`` with each block's log-det the **mean**
``-xa.mean(dim=[1, 2])``; ``reverse(z, y=None, guidance=0, guide_what="ab", attn_temp=1.0,
annealed_guidance=False, return_sequence=False)`` that first multiplies ``z`` by
``var.sqrt()``; a ``var`` buffer ``(T, C p^2)``; ``patchify`` / ``unpatchify`` with
``F.unfold`` / ``F.fold``; ``blocks`` of ``MetaBlock`` s (``permutation`` identity or flip,
``proj_out``, a KV-cached ``reverse`` that writes into its input token by token, attention
caches switched on by ``sample`` mode). The innaudit adapter must audit it with no glue.

Factories (``file.py:NAME`` as MODEL): ``build`` (identity at start: ``proj_out`` zero, as
ml-tarflow initializes), ``build_vp`` (``nvp=False``), ``build_guided``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PermutationIdentity(nn.Module):
    def forward(self, x: Tensor, dim: int = 1, inverse: bool = False) -> Tensor:
        return x


class PermutationFlip(nn.Module):
    def forward(self, x: Tensor, dim: int = 1, inverse: bool = False) -> Tensor:
        return x.flip(dims=[dim])


class Attention(nn.Module):
    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.heads = channels // head_channels
        self.sample = False
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, t, c = x.shape
        h = self.norm(x.float()).type(x.dtype)
        q, k, v = self.qkv(h).reshape(b, t, 3 * self.heads, -1).transpose(1, 2).chunk(3, dim=1)
        if self.sample:
            self.keys.append(k)
            self.values.append(v)
            k, v = torch.cat(self.keys, 2), torch.cat(self.values, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.bool())
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.attention = Attention(channels, head_channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attention(x, mask)
        return x + self.mlp(self.norm(x.float()).type(x.dtype))


class MetaBlock(nn.Module):
    attn_mask: Tensor

    def __init__(self, in_channels: int, channels: int, tokens: int, permutation: nn.Module, layers: int, nvp: bool):
        super().__init__()
        self.proj_in = nn.Linear(in_channels, channels)
        self.pos_embed = nn.Parameter(torch.randn(tokens, channels) * 1e-2)
        self.attn_blocks = nn.ModuleList([AttentionBlock(channels, 8) for _ in range(layers)])
        self.nvp = nvp
        self.proj_out = nn.Linear(channels, 2 * in_channels if nvp else in_channels)
        self.proj_out.weight.data.fill_(0.0)
        self.permutation = permutation
        self.register_buffer("attn_mask", torch.tril(torch.ones(tokens, tokens)))

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        if self.nvp:
            xa, xb = out.chunk(2, dim=-1)
            return xa, xb
        return torch.zeros_like(out), out

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.permutation(x)
        x_in = x
        h = self.proj_in(x) + self.permutation(self.pos_embed, dim=0)
        for block in self.attn_blocks:
            h = block(h, self.attn_mask)
        out = self.proj_out(h)
        out = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
        xa, xb = self._split(out)
        z = (x_in - xb) * (-xa.float()).exp().type(xa.dtype)
        return self.permutation(z, inverse=True), -xa.mean(dim=[1, 2])

    def _sampling(self, flag: bool) -> None:
        for m in self.modules():
            if isinstance(m, Attention):
                m.sample, m.keys, m.values = flag, [], []

    def reverse(self, x: Tensor, y: Tensor | None = None, guidance: float = 0, *args: object) -> Tensor:
        x = self.permutation(x)
        pos = self.permutation(self.pos_embed, dim=0)
        self._sampling(True)
        for i in range(x.size(1) - 1):
            h = self.proj_in(x[:, i : i + 1]) + pos[i : i + 1]
            for block in self.attn_blocks:
                h = block(h)  # the KV cache, no mask
            za, zb = self._split(self.proj_out(h))
            x[:, i + 1] = x[:, i + 1] * za[:, 0].float().exp().type(za.dtype) + zb[:, 0]
        self._sampling(False)
        return self.permutation(x, inverse=True)


class Model(nn.Module):
    var: Tensor

    def __init__(
        self,
        in_channels: int,
        img_size: int,
        patch_size: int,
        channels: int,
        num_blocks: int,
        layers_per_block: int,
        nvp: bool = True,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        tokens, dim = (img_size // patch_size) ** 2, in_channels * patch_size**2
        flips = [PermutationIdentity(), PermutationFlip()]
        self.blocks = nn.ModuleList(
            [MetaBlock(dim, channels, tokens, flips[i % 2], layers_per_block, nvp) for i in range(num_blocks)]
        )
        self.register_buffer("var", torch.ones(tokens, dim))

    def patchify(self, x: Tensor) -> Tensor:
        return F.unfold(x, self.patch_size, stride=self.patch_size).transpose(1, 2)

    def unpatchify(self, x: Tensor) -> Tensor:
        return F.fold(x.transpose(1, 2), (self.img_size, self.img_size), self.patch_size, stride=self.patch_size)

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, list[Tensor], Tensor]:
        x = self.patchify(x)
        outputs, logdets = [], torch.zeros((), device=x.device)
        for block in self.blocks:
            x, logdet = block(x, y)
            logdets = logdets + logdet
            outputs.append(x)
        return x, outputs, logdets

    def update_prior(self, z: Tensor) -> None:
        self.var.lerp_((z**2).mean(dim=0).detach(), weight=0.1)

    def get_loss(self, z: Tensor, logdets: Tensor) -> Tensor:
        return 0.5 * z.pow(2).mean() - logdets.mean()

    def reverse(
        self,
        x: Tensor,
        y: Tensor | None = None,
        guidance: float = 0,
        guide_what: str = "ab",
        attn_temp: float = 1.0,
        annealed_guidance: bool = False,
        return_sequence: bool = False,
    ) -> Tensor:
        x = x * self.var.sqrt()
        for block in reversed(self.blocks):
            x = block.reverse(x, y, guidance)
        return self.unpatchify(x)


def build() -> Model:
    """3x16x16 images, patch 4 (16 tokens of 48 values), 2 blocks of 1 layer, width 32."""
    torch.manual_seed(0)
    return Model(3, 16, 4, 32, 2, 1)


def build_vp() -> Model:
    """The same size in the VP mode (``nvp=False``: shift only, ``var`` learned)."""
    torch.manual_seed(0)
    return Model(3, 16, 4, 32, 2, 1, nvp=False)


def randomized(model: Model, seed: int, std: float) -> Model:
    """``model`` with its zero-initialized heads drawn from ``N(0, std^2)`` (a non-identity flow)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            block.proj_out.weight.copy_(torch.randn(block.proj_out.weight.shape, generator=generator) * std)
    return model
