"""Glow/RealNVP-style coupling flows: ``coupling-vector`` and ``coupling-image``.

One flow step is ``ActNorm -> permutation -> Coupling`` (ActNorm optional); the image model puts a
:class:`~innaudit.zoo.layers.Squeeze2d` first, so its latent has the squeezed shape
``(4C, H/2, W/2)``. ``forward(x) -> (z, log_det)`` runs ``blocks`` in order and sums their
log-dets (exact); ``inverse(z)`` runs their inverses in reverse order (analytic).

Bi-Lipschitz situation (Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, Section 3): with ``coupling="additive"`` every block is
globally bi-Lipschitz, so the inverse is stable everywhere; with ``coupling="affine"`` the flow is
only locally bi-Lipschitz, and with ``scale="sigmoid"`` or ``"exp"`` the factor ``1/g`` is
unbounded, so inputs far from the training data can make the inverse explode to inf/nan
(Behrmann et al., AISTATS 2021). ``scale="bounded"`` caps ``1/g`` at 2 per coupling.

Determinism: parameters are initialized from a local ``torch.Generator`` seeded with the config's
``seed``; the global torch RNG is left untouched, so ``build(name, config)`` always returns the
same initial model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from innaudit.zoo import register
from innaudit.zoo.flow import SequentialFlow
from innaudit.zoo.layers import ActNorm, ConvNet, Coupling, FixedPermutation, InvertibleConv1x1, MLPNet, Squeeze2d

__all__ = ["CouplingFlow", "CouplingImage", "CouplingVector"]

PERMUTATIONS = ("reverse", "shuffle", "conv1x1", "linear")


def _permutation(kind: str, channels: int, generator: torch.Generator) -> nn.Module:
    """A fixed (``reverse``, ``shuffle``) or learned (``conv1x1``, alias ``linear``) permutation."""
    if kind in ("conv1x1", "linear"):
        return InvertibleConv1x1(channels, generator)
    if kind in ("reverse", "shuffle"):
        return FixedPermutation(channels, kind, generator)
    raise ValueError(f"permutation {kind!r} is unknown; expected one of {', '.join(PERMUTATIONS)}")


class CouplingFlow(SequentialFlow):
    """A coupling flow: ``[ActNorm], permutation, Coupling`` steps (analytic inverse, exact log-det)."""


def _steps(
    channels: int,
    steps: int,
    hidden: int,
    coupling: str,
    scale: str,
    permutation: str,
    actnorm: bool,
    net_type: type[nn.Module],
    generator: torch.Generator,
) -> list[nn.Module]:
    """``steps`` flow steps ``[ActNorm], permutation, Coupling`` on ``channels`` channels."""
    out_channels = (channels - channels // 2) * (2 if coupling == "affine" else 1)
    blocks: list[nn.Module] = []
    for _ in range(steps):
        if actnorm:
            blocks.append(ActNorm(channels))
        blocks.append(_permutation(permutation, channels, generator))
        net = net_type(channels // 2, out_channels, hidden, generator)
        blocks.append(Coupling(net, channels, coupling, scale))
    return blocks


@register("coupling-vector")
class CouplingVector(CouplingFlow):
    """Coupling flow on flat vectors of shape ``(D,)`` with MLP coupling nets.

    Args:
        shape: ``[D]``, the input shape without the batch dimension (D >= 2).
        steps: number of flow steps (each ``[ActNorm], permutation, Coupling``).
        hidden: width of the two hidden layers of each coupling MLP.
        coupling: ``"additive"`` or ``"affine"``.
        scale: ``"sigmoid"``, ``"exp"`` or ``"bounded"`` (affine only).
        permutation: ``"reverse"``, ``"shuffle"`` or ``"linear"``/``"conv1x1"`` (learned).
        actnorm: whether each step starts with an ActNorm.
        seed: seed of the local generator that initializes the parameters.
    """

    def __init__(
        self,
        shape: Sequence[int] = (2,),
        steps: int = 4,
        hidden: int = 64,
        coupling: str = "affine",
        scale: str = "sigmoid",
        permutation: str = "reverse",
        actnorm: bool = True,
        seed: int = 0,
    ) -> None:
        if len(shape) != 1 or int(shape[0]) < 2:
            raise ValueError(f"coupling-vector needs shape [D] with D >= 2; got {list(shape)}")
        generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            blocks = _steps(int(shape[0]), steps, hidden, coupling, scale, permutation, actnorm, MLPNet, generator)
        super().__init__(blocks)


@register("coupling-image")
class CouplingImage(CouplingFlow):
    """Coupling flow on images ``(C, H, W)`` (H, W even): a squeeze, then conv coupling steps.

    The latent keeps the squeezed shape ``(4C, H/2, W/2)``. Arguments as for
    :class:`CouplingVector`, with ``shape=[C, H, W]``, ``hidden`` the conv width, and
    ``permutation`` one of ``"reverse"``, ``"shuffle"``, ``"conv1x1"``.
    """

    def __init__(
        self,
        shape: Sequence[int] = (1, 8, 8),
        steps: int = 8,
        hidden: int = 64,
        coupling: str = "affine",
        scale: str = "sigmoid",
        permutation: str = "conv1x1",
        actnorm: bool = True,
        seed: int = 0,
    ) -> None:
        if len(shape) != 3 or int(shape[1]) % 2 or int(shape[2]) % 2:
            raise ValueError(f"coupling-image needs shape [C, H, W] with even H, W; got {list(shape)}")
        generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            blocks = _steps(4 * int(shape[0]), steps, hidden, coupling, scale, permutation, actnorm, ConvNet, generator)
        super().__init__([Squeeze2d(), *blocks])
