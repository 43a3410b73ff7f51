"""``glow``: a multi-scale Glow (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039).

Level ``i`` (``0 .. levels-1``, data -> latent order) is a :class:`~innaudit.zoo.layers.Squeeze2d`,
``steps`` flow steps ``[ActNorm], 1x1 conv, Coupling``, and (all but the last level) a
:class:`Split` that factors out half of the channels as the level's latent ``z_i``. ``forward``
returns ``([z_0, ..., z_{L-1}], log_det)``: a list of latents, finest first, ``z_{L-1}`` the
coarsest (what is left after the last level). ``inverse`` takes that list.

The split prior: with ``split_prior="learned"`` (Glow) the factored-out half ``u`` is
standardized by a prior conditioned on the kept half, ``z_i = (u - mu(kept)) * exp(-log_sd(kept))``
(a zero-initialized 3x3 conv gives ``mu`` and ``log_sd``), so every ``z_i`` is standard normal
under the model and the inverse ``u = mu + exp(log_sd) * z_i`` is part of the bijection (and can
amplify like a coupling scale); with ``"fixed"`` ``z_i = u`` (a standard-normal prior).

``blocks`` lists every block in data -> latent order and ``block_names`` names them
``level i / block j: ClassName``. A ``Split`` block's output is ``([kept, z_i], log_det)``.
Bi-Lipschitz situation as for :mod:`innaudit.zoo.coupling`: affine coupling and a learned split
prior are only locally bi-Lipschitz; additive coupling with a fixed prior is global.
Parameters come from a local generator seeded with ``seed`` (the global RNG is untouched).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.zoo import register
from innaudit.zoo.coupling import _permutation
from innaudit.zoo.layers import ActNorm, ConvNet, Coupling, Squeeze2d, _zero

__all__ = ["Glow", "Split"]


class Split(nn.Module):
    """Factor out the last half of the channels: ``h -> ([kept, z], log_det)``.

    With a learned prior, ``z = (u - mu(kept)) * exp(-log_sd(kept))`` and ``log_det =
    -sum log_sd``; with a fixed prior ``z = u`` and ``log_det = 0``. ``inverse([kept, z])``.
    """

    def __init__(self, channels: int, learned: bool) -> None:
        super().__init__()
        self.keep = channels // 2
        self.prior = nn.Conv2d(self.keep, 2 * (channels - self.keep), 3, padding=1) if learned else None
        if self.prior is not None:
            _zero(self.prior)

    def _stats(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        assert self.prior is not None
        out = self.prior(kept)
        half = out.shape[1] // 2
        return out[:, :half], out[:, half:]

    def forward(self, h: Tensor) -> tuple[list[Tensor], Tensor]:
        kept, u = h[:, : self.keep], h[:, self.keep :]
        if self.prior is None:
            return [kept, u], h.new_zeros(h.shape[0])
        mu, log_sd = self._stats(kept)
        return [kept, (u - mu) * torch.exp(-log_sd)], -log_sd.flatten(1).sum(1)

    def inverse(self, parts: Sequence[Tensor]) -> Tensor:
        kept, z = parts
        if self.prior is None:
            return torch.cat([kept, z], 1)
        mu, log_sd = self._stats(kept)
        return torch.cat([kept, mu + torch.exp(log_sd) * z], 1)


@register("glow")
class Glow(nn.Module):
    """Multi-scale Glow on images ``(C, H, W)`` with ``H`` and ``W`` divisible by ``2**levels``.

    Args:
        shape: ``[C, H, W]``.
        levels: number of levels ``L`` (each squeezes; all but the last split).
        steps: flow steps ``K`` per level.
        hidden: width of the coupling conv nets.
        coupling: ``"affine"`` or ``"additive"``.
        scale: affine scale function, ``"sigmoid"`` (Glow), ``"exp"`` or ``"bounded"``.
        actnorm: whether each step starts with an ActNorm.
        split_prior: ``"learned"`` (conditional Gaussian, Glow) or ``"fixed"`` (standard normal).
        seed: seed of the local generator that initializes the parameters.
    """

    inverse_kind = "analytic"
    log_det_kind = "exact"

    def __init__(
        self,
        shape: Sequence[int] = (3, 32, 32),
        levels: int = 3,
        steps: int = 4,
        hidden: int = 64,
        coupling: str = "affine",
        scale: str = "sigmoid",
        actnorm: bool = True,
        split_prior: str = "learned",
        seed: int = 0,
    ) -> None:
        super().__init__()
        channels, height, width = (int(s) for s in shape)
        if len(shape) != 3 or height % 2**levels or width % 2**levels or levels < 1:
            raise ValueError(
                f"glow needs shape [C, H, W] with H, W divisible by 2**levels; got {list(shape)} with levels={levels}"
            )
        if split_prior not in ("learned", "fixed"):
            raise ValueError(f"split_prior {split_prior!r} is unknown; expected learned or fixed")
        self.input_shape = (channels, height, width)
        generator = torch.Generator().manual_seed(int(seed))
        blocks: list[nn.Module] = []
        names: list[str] = []
        with torch.random.fork_rng(devices=[]):
            for level in range(levels):
                channels *= 4
                level_blocks: list[nn.Module] = [Squeeze2d()]
                for _ in range(steps):
                    if actnorm:
                        level_blocks.append(ActNorm(channels))
                    level_blocks.append(_permutation("conv1x1", channels, generator))
                    out = (channels - channels // 2) * (2 if coupling == "affine" else 1)
                    level_blocks.append(
                        Coupling(ConvNet(channels // 2, out, hidden, generator), channels, coupling, scale)
                    )
                if level < levels - 1:
                    level_blocks.append(Split(channels, split_prior == "learned"))
                    channels //= 2
                blocks += level_blocks
                names += [f"level {level} / block {j}: {type(b).__name__}" for j, b in enumerate(level_blocks)]
        self.blocks = nn.ModuleList(blocks)
        self.block_names = names

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """``([z_0, ..., z_{L-1}], log|det dz/dx|)``, finest level first."""
        log_det = x.new_zeros(x.shape[0])
        latents: list[Tensor] = []
        for block in self.blocks:
            x, block_log_det = block(x)
            log_det = log_det + block_log_det
            if isinstance(block, Split):
                x, z = x
                latents.append(z)
        return [*latents, x], log_det

    def inverse(self, z: Sequence[Tensor]) -> Tensor:
        """``x`` from the list of latents (the inverse of :meth:`forward`)."""
        factored = list(z[:-1])
        h = z[-1]
        block: Any
        for block in reversed(self.blocks):
            h = block.inverse([h, factored.pop()]) if isinstance(block, Split) else block.inverse(h)
        return h

    def extra_repr(self) -> str:
        return f"blocks={len(self.blocks)}"


def glow_config(**overrides: Any) -> dict[str, Any]:
    """The shipped ``patches-glow`` configuration with ``overrides``."""
    return {
        "shape": [3, 32, 32],
        "levels": 3,
        "steps": 4,
        "hidden": 64,
        "coupling": "affine",
        "scale": "sigmoid",
        "actnorm": True,
        "split_prior": "learned",
        **overrides,
    }
