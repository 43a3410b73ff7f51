"""``Dataset``: a named, capped stream of batches shaped like the model's input."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import Tensor

__all__ = ["Dataset", "Role"]


class Role(str, Enum):
    """Whether a set is the model's own data or held out from it."""

    IN_DISTRIBUTION = "in-distribution"
    OOD = "ood"


@dataclass(frozen=True)
class Dataset:
    """A data set ready for the audits.

    Attributes:
        name: how the report names the set.
        spec: the SPEC it was built from.
        role: in-distribution or OOD.
        size: number of samples (already capped by ``--samples``).
        make: ``make(start, stop, generator_seed)`` returns samples ``start:stop`` as a float
            tensor on the CPU; built-in random sets draw them from a generator seeded by
            ``(seed, name, start)`` so every batch is reproducible on its own.
        note: anything the report should say about the set (what a built-in set is).
        origin: where the samples came from, as plain data for the report: ``format``, the
            ``path``, the files read, the ``provenance`` of a shipped set.
        transform: the conversion steps applied to every sample, in order
            (:mod:`innaudit.data.convert`); empty when the samples are used as stored.
    """

    name: str
    spec: str
    role: Role
    size: int
    make: Callable[[int, int], Tensor]
    note: str = ""
    origin: Mapping[str, object] = field(default_factory=dict)
    transform: tuple[str, ...] = ()

    def batches(
        self, batch_size: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> Iterator[Tensor]:
        """Yield the samples in batches of at most ``batch_size``; memory stays per batch."""
        for start in range(0, self.size, batch_size):
            stop = min(start + batch_size, self.size)
            yield self.make(start, stop).to(device=device, dtype=dtype)

    def first(self, count: int) -> Tensor:
        """The first ``count`` samples (fewer if the set is smaller)."""
        return self.make(0, min(count, self.size))

    def describe(self) -> dict[str, object]:
        """Plain-data description for the report."""
        described: dict[str, object] = {
            "name": self.name,
            "spec": self.spec,
            "role": self.role.value,
            "size": self.size,
            "note": self.note,
        }
        if self.origin:
            described["origin"] = dict(self.origin)
        if self.transform:
            described["transform"] = list(self.transform)
        return described
