"""Built-in data sets, shaped and ranged like the model's domain.

The noise sets follow the paper's conventions (Behrmann et al., AISTATS 2021, https://arxiv.org/abs/2006.09347, Section 4), written
for a domain ``[low, high]`` of width ``w`` and centre ``c``; for ``[0, 1]`` they are exactly the
ResFlow conventions and for ``[-0.5, 0.5]`` the Glow ones:

=============  =============================================  ============================
name           sample                                          clipping
=============  =============================================  ============================
uniform        ``low + w * U(0, 1)``                           ``[low + 0.01w, high - 0.01w]``
gaussian       ``c + w * N(0, 1)``                             ``[low + 0.01w, high - 0.01w]``
rademacher     ``low`` or ``high`` with probability 1/2        none
constant:V     every element ``V``                             none
digits[:split] the 8x8 digits mapped into ``[low, high)``      none (17 levels)
patches:SPLIT  3x32x32 crops of scikit-image sample images     none (256 levels)
checkerboard   paper 4(g): squares of side 2 in [-4, 4]^2      none (2-D models only)
two-moons      two interleaved half circles (noise 0.2)        none (2-D models only)
rings          circles of radius 1, 2, 3 (radial noise 0.08)   none (2-D models only)
regression2d   paper 5.3 inputs ``(a, b) ~ N(0, I)``           none (2-D models only)
grid:L,H,N     ``N x N`` points ``L + k (H - L) / N``, k < N   none (2-D models only)
=============  =============================================  ============================

The 2-D sets ignore the domain's range (they are defined in absolute coordinates). The random
ones accept an optional ``:train`` / ``:test`` suffix that only changes the seed
(``checkerboard:test`` is the default in-distribution set of a model trained on
``checkerboard``). The grid is fixed, row-major over ``x2``: sample ``i N + j`` is
``(x1, x2) = (v_j, v_i)`` with ``v`` = :func:`grid_axis`; ``grid:-8,8,320`` is the paper's
102,400-point map (pass ``--samples 102400``). The targets of the regression task,
``(0, x2)``, are :func:`regression_targets`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from innaudit.core.domain import DataDomain
from innaudit.core.errors import DataError
from innaudit.data.digits import LEVELS, SPLITS, load_digits

__all__ = ["BUILTINS", "DEFAULT_OOD", "Builtin", "grid_axis", "regression_targets", "toy_2d"]

Maker = Callable[[DataDomain, int, torch.Generator, str], Tensor]
DEFAULT_OOD = ("uniform", "gaussian", "rademacher")


@dataclass(frozen=True)
class Builtin:
    """A built-in set: ``random`` ones are drawn, the others are fixed data of ``fixed_size``."""

    name: str
    summary: str
    random: bool
    make: Maker
    fixed_size: Callable[[str], int] | None = None


def _shape(domain: DataDomain, count: int) -> tuple[int, ...]:
    return (count, *domain.shape)


def _clip(domain: DataDomain, x: Tensor) -> Tensor:
    margin = 0.01 * domain.width
    return x.clamp(domain.low + margin, domain.high - margin)


def _uniform(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
    return _clip(domain, domain.low + domain.width * torch.rand(_shape(domain, count), generator=gen))


def _gaussian(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
    centre = 0.5 * (domain.low + domain.high)
    noise = torch.randn(_shape(domain, count), generator=gen)
    return _clip(domain, centre + domain.width * noise)


def _rademacher(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
    coin = torch.randint(0, 2, _shape(domain, count), generator=gen).to(torch.float32)
    return domain.low + domain.width * coin


def _constant(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
    try:
        value = float(arg)
    except ValueError:
        raise DataError(f"constant:{arg!r}: {arg!r} is not a number; expected e.g. constant:0.5") from None
    largest = torch.finfo(torch.float32).max
    if math.isfinite(value) and abs(value) > largest:
        raise DataError(
            f"constant:{arg}: {value:g} is beyond float32's range (|V| <= {largest:.4g}); give a "
            "smaller value, or constant:inf for an infinite input"
        )
    return torch.full(_shape(domain, count), value)


def _digits_split(arg: str) -> str:
    split = arg or "test"
    if split not in SPLITS:
        raise DataError(f"digits:{split} is not a split; expected digits:train, digits:test or digits:all")
    return split


def _digits(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
    images = torch.from_numpy(load_digits(_digits_split(arg))[0][:count])
    if domain.numel != 64:
        raise DataError(
            f"digits are 8x8 = 64 values per sample, but the model takes shape "
            f"{tuple(domain.shape)} ({domain.numel} values)"
        )
    return (domain.low + domain.width * images).reshape(_shape(domain, len(images)))


def _patches(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
    from innaudit.data.patches import load_patches

    images = torch.from_numpy(load_patches(arg or "test")[:count])
    if tuple(domain.shape) != tuple(images.shape[1:]):
        raise DataError(f"patches are 3x32x32 colour images, but the model takes shape {tuple(domain.shape)}")
    return domain.low + domain.width * images


def _patches_size(arg: str) -> int:
    from innaudit.data.patches import load_patches

    return len(load_patches(arg or "test"))


def _planar(domain: DataDomain, name: str, points: Tensor) -> Tensor:
    """2-D points reshaped to the domain, which must hold exactly two values per sample."""
    if domain.numel != 2:
        raise DataError(
            f"{name} is a 2-D data set (2 values per sample), but the model takes "
            f"shape {tuple(domain.shape)} ({domain.numel} values)"
        )
    return points.to(torch.float32).reshape(len(points), *domain.shape)


def _toy_split(name: str, arg: str) -> None:
    if arg not in ("", "train", "test"):
        raise DataError(f"{name}:{arg}: expected {name}, {name}:train or {name}:test")


def toy_2d(name: str, count: int, gen: torch.Generator) -> Tensor:
    """``count`` points ``(count, 2)`` of the 2-D toy set ``name`` drawn from ``gen``.

    ``checkerboard`` follows the paper's code: ``x1 ~ U[-2, 2)``,
    ``x2 = U[0, 1) - 2 Bernoulli(1/2) + (floor(x1) mod 2)``, both times 2. ``regression2d`` is
    the input of the paper's 2-D regression task (5.3), ``(a, b) ~ N(0, I)``.
    """
    if name == "checkerboard":
        x1 = 4 * torch.rand(count, generator=gen) - 2
        coin = torch.randint(0, 2, (count,), generator=gen).to(torch.float32)
        x2 = torch.rand(count, generator=gen) - 2 * coin + torch.remainder(torch.floor(x1), 2)
        return 2 * torch.stack([x1, x2], 1)
    if name == "two-moons":
        t = math.pi * torch.rand(count, generator=gen)
        upper = torch.rand(count, generator=gen) < 0.5
        x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
        pts = torch.stack([x - 0.5, y - 0.25], 1) + 0.1 * torch.randn(count, 2, generator=gen)
        return 2 * pts
    if name == "rings":
        radius = torch.randint(1, 4, (count,), generator=gen).to(torch.float32)
        radius = radius + 0.08 * torch.randn(count, generator=gen)
        angle = 2 * math.pi * torch.rand(count, generator=gen)
        return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    if name == "regression2d":
        return torch.randn(count, 2, generator=gen)
    raise DataError(f"{name!r} is not a 2-D toy set")


def regression_targets(x: Tensor) -> Tensor:
    """Targets of the paper's 2-D regression task (5.3): ``y = (0, x2)`` (the first coordinate
    collapses, so no bijection fits it: an INN trained on it must push sigma_min to 0)."""
    return torch.stack([torch.zeros_like(x[:, 1]), x[:, 1]], 1)


def _toy(name: str) -> Maker:
    def make(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
        _toy_split(name, arg)
        return _planar(domain, name, toy_2d(name, count, gen))

    return make


def _grid_args(arg: str) -> tuple[float, float, int]:
    parts = arg.split(",")
    try:
        low, high, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3 or not high > low or not 1 <= n <= 2000:
            raise ValueError
    except (ValueError, IndexError):
        raise DataError(
            f"grid:{arg}: expected grid:LOW,HIGH,N with LOW < HIGH and 1 <= N <= 2000, e.g. grid:-8,8,320"
        ) from None
    largest = torch.finfo(torch.float32).max
    if not (abs(low) <= largest and abs(high) <= largest):
        raise DataError(
            f"grid:{arg}: the grid leaves float32's range (|LOW|, |HIGH| <= {largest:.4g}); "
            "give finite bounds, e.g. grid:-8,8,320"
        )
    return low, high, n


def grid_axis(low: float, high: float, n: int) -> Tensor:
    """The ``n`` coordinates ``low + k (high - low) / n`` of one grid axis (paper: [-8, 8) step 0.05)."""
    return low + torch.arange(n, dtype=torch.float64) * ((high - low) / n)


def _grid(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
    low, high, n = _grid_args(arg)
    axis = grid_axis(low, high, n)
    x2, x1 = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([x1.flatten(), x2.flatten()], 1)[:count]
    return _planar(domain, "grid", points)


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("uniform", "U(low, high), clipped 1% inside the range", True, _uniform),
        Builtin("gaussian", "centre + width * N(0, 1), clipped 1% inside the range", True, _gaussian),
        Builtin("rademacher", "each element low or high with probability 1/2", True, _rademacher),
        Builtin("constant", "constant:V, every element V", False, _constant, lambda arg: 1),
        Builtin(
            "digits",
            f"8x8 handwritten digits, {LEVELS} levels (digits:train|test|all)",
            False,
            _digits,
            lambda arg: len(load_digits(_digits_split(arg))[0]),
        ),
        Builtin(
            "patches",
            "3x32x32 crops of scikit-image's sample images, 256 levels "
            "(patches:train|test|ood; needs innaudit[images])",
            False,
            _patches,
            _patches_size,
        ),
        Builtin(
            "checkerboard", "2-D checkerboard of the paper (4(g)), squares in [-4, 4]^2", True, _toy("checkerboard")
        ),
        Builtin("two-moons", "2-D two interleaved half circles", True, _toy("two-moons")),
        Builtin("rings", "2-D concentric rings of radius 1, 2, 3", True, _toy("rings")),
        Builtin("regression2d", "2-D regression inputs (paper 5.3), N(0, I)", True, _toy("regression2d")),
        Builtin(
            "grid",
            "grid:LOW,HIGH,N, an N x N grid over [LOW, HIGH)^2 (2-D models)",
            False,
            _grid,
            lambda arg: _grid_args(arg)[2] ** 2,
        ),
    )
}
