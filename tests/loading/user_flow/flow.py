"""A user's flow as people write it: couplings in ``self.layers`` (an ``nn.ModuleList``), a
sibling module imported by name, no ``blocks`` attribute."""

from __future__ import annotations

from couplings import AdditiveCoupling  # a sibling file: needs the factory's folder importable
from torch import Tensor, nn

DIM = 8


class UserFlow(nn.Module):
    """Six additive couplings, alternating halves."""

    input_shape = (DIM,)
    data_range = (-4.0, 4.0)

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AdditiveCoupling(DIM, 16, i % 2 == 1, seed=i) for i in range(6))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(len(x))
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


class MethodFlow(UserFlow):
    """The same chain offered by a ``blocks()`` method (the list kept under another name)."""

    def __init__(self) -> None:
        super().__init__()
        self.chain = self.layers
        del self.layers

    def blocks(self) -> list[nn.Module]:
        return list(self.chain)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(len(x))
        for layer in self.chain:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.chain):
            z = layer.inverse(z)
        return z


class HookFlow(MethodFlow):
    """Blocks kept where no rule looks, named by the documented hook."""

    def blocks(self) -> list[nn.Module]:  # not a chain: the hook wins
        return []

    def innaudit_blocks(self) -> list[nn.Module]:
        return list(self.chain)


def build() -> nn.Module:
    return UserFlow()


def build_method() -> nn.Module:
    return MethodFlow()


def build_hook() -> nn.Module:
    return HookFlow()
