"""Invertible building blocks of the coupling flows in :mod:`innaudit.zoo.coupling`.

Every block is an ``nn.Module`` with ``forward(x) -> (y, log_det)`` (``log_det`` of shape
``(batch,)``) and ``inverse(y) -> x``. Blocks work on vectors ``(B, C)`` and on images
``(B, C, H, W)`` alike: dimension 1 is the channel dimension, everything after it is "spatial".

Bi-Lipschitz constants (Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, Section 3):

- :class:`Squeeze2d`, :class:`FixedPermutation`: orthogonal, Lip = Lip(inverse) = 1.
- :class:`ActNorm`: Lip = max exp(log_scale), Lip(inverse) = 1 / min exp(log_scale); global.
- :class:`InvertibleConv1x1`: Lip = sigma_max(W), Lip(inverse) = 1 / sigma_min(W); global given
  W, but W may become ill-conditioned during training.
- :class:`Coupling` ``additive``: globally bi-Lipschitz, both constants <= 1 + Lip(t).
  ``affine``: only locally bi-Lipschitz. The inverse multiplies by ``1/g``, unbounded for
  ``g = sigmoid`` and ``g = exp``, so the inverse can explode (the paper's "exploding inverse");
  ``bounded`` keeps ``1/g <= 2`` but the input-dependent cross term stays.

Weights are initialized from a ``torch.Generator`` passed in by the caller, so a model is a
deterministic function of its config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SCALES",
    "ActNorm",
    "ConvNet",
    "Coupling",
    "FixedPermutation",
    "InvertibleConv1x1",
    "MLPNet",
    "Squeeze2d",
    "scale_and_log",
]


def _per_channel(param: Tensor, x: Tensor) -> Tensor:
    """View a ``(C,)`` parameter so it broadcasts over ``x`` of shape ``(B, C, ...)``."""
    return param.view(1, -1, *([1] * (x.dim() - 2)))


def _spatial(x: Tensor) -> int:
    """Number of positions per channel: the product of the sizes after dimension 1."""
    return int(x[0, 0].numel()) if x.dim() > 2 else 1


def _init_uniform(layer: nn.Linear | nn.Conv2d, generator: torch.Generator) -> None:
    """PyTorch's default init (uniform +-1/sqrt(fan_in)), drawn from ``generator``."""
    fan_in = layer.weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=generator)


def _zero(layer: nn.Linear | nn.Conv2d) -> None:
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


class Squeeze2d(nn.Module):
    """Space-to-depth: ``(B, C, H, W) -> (B, 4C, H/2, W/2)``; orthogonal, log-det 0.

    Lets a 1-channel image be split by channel in a coupling.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, c * 4, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, y: Tensor) -> Tensor:
        b, c4, h2, w2 = y.shape
        x = y.reshape(b, c4 // 4, 2, 2, h2, w2).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c4 // 4, h2 * 2, w2 * 2)


class ActNorm(nn.Module):
    """Per-channel affine normalization, ``y = (x + bias) * exp(log_scale)``.

    Inverse ``x = y * exp(-log_scale) - bias``; log-det ``spatial * sum(log_scale)``. Starts as
    the identity (no data-dependent init). Lip = max exp(log_scale), Lip(inverse) =
    1 / min exp(log_scale): globally bi-Lipschitz for fixed parameters.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = (x + _per_channel(self.bias, x)) * _per_channel(self.log_scale.exp(), x)
        log_det = self.log_scale.sum() * _spatial(x)
        return y, log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * _per_channel((-self.log_scale).exp(), y) - _per_channel(self.bias, y)


class FixedPermutation(nn.Module):
    """A fixed channel permutation (reverse, or a seeded shuffle) stored as a buffer.

    ``y[:, i] = x[:, perm[i]]``, inverse ``x[:, perm[i]] = y[:, i]``; orthogonal, log-det 0.
    """

    perm: Tensor
    inverse_perm: Tensor

    def __init__(self, channels: int, kind: str = "reverse", generator: torch.Generator | None = None) -> None:
        super().__init__()
        if kind == "reverse":
            perm = torch.arange(channels - 1, -1, -1)
        elif kind == "shuffle":
            perm = torch.randperm(channels, generator=generator)
        else:
            raise ValueError(f"fixed permutation {kind!r} is unknown; expected reverse or shuffle")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y[:, self.inverse_perm]


class InvertibleConv1x1(nn.Module):
    """Learned channel mixing ``y = W x`` at every position (Glow's 1x1 conv; a linear map on
    vectors). Plain weight, initialized to a random orthogonal matrix.

    Inverse ``x = W^{-1} y`` (``torch.linalg.inv``); log-det ``spatial * log|det W|``.
    Lip = sigma_max(W), Lip(inverse) = 1 / sigma_min(W): global for a fixed W, which training
    may make ill-conditioned.
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        self.weight = nn.Parameter(q)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = torch.einsum("oc,bc...->bo...", self.weight, x)
        log_det = torch.linalg.slogdet(self.weight)[1] * _spatial(x)
        return y, log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return torch.einsum("oc,bc...->bo...", torch.linalg.inv(self.weight), y)


class MLPNet(nn.Module):
    """Coupling net for vectors: Linear, ReLU, Linear, ReLU, zero-initialized Linear."""

    def __init__(self, c_in: int, c_out: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, c_out)
        for layer in (self.body[0], self.body[2]):
            _init_uniform(cast("nn.Linear | nn.Conv2d", layer), generator)
        _zero(self.out)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))


class ConvNet(nn.Module):
    """Coupling net for images (Glow): 3x3 conv, ReLU, 1x1 conv, ReLU, zero-initialized 3x3 conv."""

    def __init__(self, c_in: int, c_out: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU()
        )
        self.out = nn.Conv2d(hidden, c_out, 3, padding=1)
        for layer in (self.body[0], self.body[2]):
            _init_uniform(cast("nn.Linear | nn.Conv2d", layer), generator)
        _zero(self.out)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x))


def _sigmoid_scale(h: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sigmoid(h + 2.0), F.logsigmoid(h + 2.0)


def _exp_scale(h: Tensor) -> tuple[Tensor, Tensor]:
    return h.exp(), h


def _bounded_scale(h: Tensor) -> tuple[Tensor, Tensor]:
    g = 0.5 * torch.sigmoid(h + 2.0) + 0.5
    return g, g.log()


SCALES: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    "exp": _exp_scale,  # g = exp(h): range (0, inf), both g and 1/g unbounded
    "sigmoid": _sigmoid_scale,  # g = sigmoid(h + 2): range (0, 1), 1/g unbounded (Glow default)
    "bounded": _bounded_scale,  # g = 0.5 sigmoid(h + 2) + 0.5: range (0.5, 1), 1/g <= 2
}


def scale_and_log(kind: str, h: Tensor) -> tuple[Tensor, Tensor]:
    """``(g(h), log g(h))`` for the scale function named ``kind`` (see :data:`SCALES`)."""
    try:
        return SCALES[kind](h)
    except KeyError:
        raise ValueError(f"scale {kind!r} is unknown; expected one of {', '.join(SCALES)}") from None


class Coupling(nn.Module):
    """Channel-split coupling, ``x = (x1, x2)`` with ``x1`` the first ``C // 2`` channels.

    ``additive`` (NICE): ``y2 = x2 + t(x1)``, inverse ``x2 = y2 - t(y1)``, log-det 0. Globally
    bi-Lipschitz: Lip and Lip(inverse) <= 1 + Lip(t).

    ``affine`` (Glow-PyTorch form): ``y2 = (x2 + t(x1)) * g(h(x1))``, inverse
    ``x2 = y2 / g(h(y1)) - t(y1)``, log-det ``sum log g(h(x1))``. Only locally bi-Lipschitz: the
    inverse constant contains ``sup 1/g``, unbounded for ``scale="sigmoid"`` (g in (0, 1)) and
    ``"exp"``; a scale that underflows to 0 makes the inverse return inf/nan. ``"bounded"``
    (g in (0.5, 1)) keeps ``1/g <= 2``. ``y1 = x1`` in both kinds. The net outputs ``t`` in its
    first ``C - C//2`` channels and ``h`` in the rest.

    ``clamp = c`` (None: off) soft-clamps the net's scale output before ``g``: ``h -> c tanh(h /
    c)``, so ``h`` stays in ``(-c, c)`` and ``g`` in ``(g(-c), g(c))``: for ``exp``, ``1/g <
    exp(c)`` (STARFlow's ``soft_clip``, Gu et al. 2025, https://arxiv.org/abs/2506.06276). Where
    ``|h| << c`` the map is nearly unchanged (``c tanh(h/c) = h - h^3 / (3 c^2) + ...``).
    """

    def __init__(
        self,
        net: nn.Module,
        channels: int,
        coupling: str = "affine",
        scale: str = "sigmoid",
        clamp: float | None = None,
    ) -> None:
        super().__init__()
        if coupling not in ("additive", "affine"):
            raise ValueError(f"coupling {coupling!r} is unknown; expected additive or affine")
        scale_and_log(scale, torch.zeros(1))  # validates the name
        if clamp is not None and not (0 < clamp < math.inf):
            raise ValueError(f"clamp {clamp!r} is not a positive, finite number")
        self.net = net
        self.split = channels // 2
        self.coupling = coupling
        self.scale = scale
        self.clamp = clamp

    def _params(self, x1: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.net(x1)
        if self.coupling == "additive":
            return out, None
        c2 = out.shape[1] // 2
        h = out[:, c2:]
        return out[:, :c2], h if self.clamp is None else self.clamp * torch.tanh(h / self.clamp)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        shift, h = self._params(x1)
        if h is None:
            return torch.cat([x1, x2 + shift], 1), x.new_zeros(x.shape[0])
        g, log_g = scale_and_log(self.scale, h)
        return torch.cat([x1, (x2 + shift) * g], 1), log_g.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        shift, h = self._params(y1)
        if h is None:
            return torch.cat([y1, y2 - shift], 1)
        g, _ = scale_and_log(self.scale, h)
        return torch.cat([y1, y2 / g - shift], 1)

    def scales(self, x: Tensor) -> Tensor:
        """The scales ``g(h(x1))`` this block applies to input ``x`` (shape of ``x2``); all ones
        for additive coupling. Their minimum is the largest inverse factor ``1/g``."""
        shift, h = self._params(x[:, : self.split])
        return torch.ones_like(shift) if h is None else scale_and_log(self.scale, h)[0]
