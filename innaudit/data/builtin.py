"""Built-in data sets, shaped and ranged like the model's domain.

The noise sets follow the paper's conventions (``shared/research/paper-spec.md`` 4(a)), written
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
=============  =============================================  ============================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..domain import DataDomain
from ..errors import DataError
from .digits import LEVELS, SPLITS, load_digits

__all__ = ["BUILTINS", "DEFAULT_OOD", "Builtin", "stable_seed"]

Maker = Callable[[DataDomain, int, torch.Generator, str], Tensor]
DEFAULT_OOD = ("uniform", "gaussian", "rademacher")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across runs and platforms (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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
    return torch.full(_shape(domain, count), value)


def _digits_split(arg: str) -> str:
    split = arg or "test"
    if split not in SPLITS:
        raise DataError(f"digits:{split} is not a split; expected digits:train, digits:test or digits:all")
    return split


def _digits(domain: DataDomain, count: int, gen: torch.Generator, arg: str) -> Tensor:
    images = torch.from_numpy(load_digits(_digits_split(arg))[0][:count])
    if domain.numel != 64:
        raise DataError(f"digits are 8x8 = 64 values per sample, but the model takes shape "
                        f"{tuple(domain.shape)} ({domain.numel} values)")
    return (domain.low + domain.width * images).reshape(_shape(domain, len(images)))


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("uniform", "U(low, high), clipped 1% inside the range", True, _uniform),
        Builtin("gaussian", "centre + width * N(0, 1), clipped 1% inside the range", True, _gaussian),
        Builtin("rademacher", "each element low or high with probability 1/2", True, _rademacher),
        Builtin("constant", "constant:V, every element V", False, _constant, lambda arg: 1),
        Builtin("digits", f"8x8 handwritten digits, {LEVELS} levels (digits:train|test|all)",
                False, _digits, lambda arg: len(load_digits(_digits_split(arg))[0])),
    )
}
