"""The InvertibleModel contract: eval mode, clones, no grad, (z, log_det) normalization."""

from __future__ import annotations

import torch
from torch import nn

from innaudit.core.domain import DataDomain
from innaudit.loading.adapt import adapt_module


class Mutating(nn.Module):
    """A map that scales in place and records the mode it ran in; a trap for the contract."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.modes.append(self.training)
        x.mul_(self.scale.detach())  # writes into its input
        return x, torch.full((len(x),), float(torch.log(self.scale)))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale


class Caching(nn.Module):
    """Returns the cached input for the latent it produced (like pyro's cached transforms)."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x * 3
        self.cache[id(z)] = x
        return z

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.cache.get(id(z), z / 3 + 1)  # the computed inverse is wrong on purpose


def _adapt(module: nn.Module) -> object:
    return adapt_module(module, DataDomain(shape=(3,)), {"test": "yes"})


def test_inputs_are_cloned_and_mode_is_restored() -> None:
    module = Mutating().train()
    model = _adapt(module)
    x = torch.ones(4, 3)
    z = model.forward(x)
    assert torch.equal(x, torch.ones(4, 3)), "the caller's tensor must not change"
    assert torch.allclose(z, 2 * torch.ones(4, 3))
    assert module.modes == [False] and module.training, "eval during the call, train after"
    assert not z.requires_grad


def test_log_det_is_taken_from_a_tuple_output() -> None:
    z, log_det = _adapt(Mutating()).forward_and_log_det(torch.ones(2, 3))
    assert z.shape == (2, 3) and torch.allclose(log_det, torch.log(torch.tensor(2.0)).expand(2))


def test_a_cache_keyed_on_the_latent_object_cannot_fake_a_round_trip() -> None:
    model = _adapt(Caching())
    x = torch.zeros(2, 3)
    x_back = model.inverse(model.forward(x))
    assert torch.allclose(x_back, torch.ones(2, 3)), "the computed (wrong) inverse must be used"


def test_float64_copy_is_independent() -> None:
    module = Mutating()
    model = _adapt(module)
    wide = model.copy_as(torch.float64)
    assert wide.dtype == torch.float64 and model.dtype == torch.float32
    assert wide.module is not module
    assert wide.forward(torch.ones(1, 3, dtype=torch.float64)).dtype == torch.float64
