"""The report's ``run`` and ``target`` blocks as typed records.

:class:`RunRecord` (how the run was made: seed, device, dtype, versions, the effective config,
the plan...) and :class:`TargetRecord` (what was audited: the model argument, its sha256, the
loader, its metadata and latent shape) are frozen dataclasses with a typed field for every key
innaudit reads, and ``extra`` for the keys a loader or a later version adds. Their JSON form is
the report's contract (``report.schema.json``) and does not change: :meth:`to_dict` gives the
keys in the order they were given (``order``; a field set later comes after), the fields set
(not None) and then ``extra``. Both are also read-only mappings, so ``report.target["loader"]``
and ``report.run.get("seed")`` read as they always did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["RunRecord", "TargetRecord"]

R = TypeVar("R", bound="_Record")

_OWN = ("extra", "order")


def _set(name: str, value: Any) -> bool:
    """Whether a field holds a value (None, and an empty ``replans``, are absent)."""
    return value is not None and not (name == "replans" and not value)


@dataclass(frozen=True, eq=False)
class _Record(Mapping[str, Any]):
    """Typed fields (None: absent), ``extra`` for other keys, ``order`` the keys' given order."""

    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys innaudit has no field for (a loader's details, a later version's additions)."""
    order: tuple[str, ...] = field(default=(), repr=False)
    """The keys in the order the block was given (its JSON order)."""

    @classmethod
    def of(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a block given as plain data (the record itself when it is one)."""
        if isinstance(data, cls):
            return data
        names = {f.name for f in dataclasses.fields(cls)} - set(_OWN)
        known = {k: v for k, v in data.items() if k in names and _set(k, v)}
        extra = {k: v for k, v in data.items() if k not in known}  # a null or empty key stays as given
        return cls(extra=extra, order=tuple(data), **known)

    def _items(self) -> dict[str, Any]:
        given = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _OWN and _set(f.name, getattr(self, f.name))
        }
        given.update({k: v for k, v in self.extra.items() if k not in given})
        first = [k for k in self.order if k in given]
        return {k: given[k] for k in [*first, *(k for k in given if k not in first)]}

    def to_dict(self) -> dict[str, Any]:
        """The block as the report's JSON holds it, keys in their given order."""
        return self._items()

    def __getitem__(self, key: str) -> Any:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._items() == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # plain data holding dicts, like the blocks it replaces


@dataclass(frozen=True, eq=False)
class RunRecord(_Record):
    """The report's ``run`` block: how this run was made.

    ``threads`` is the thread count torch used (or the thread policy's record); ``replans`` the
    plan's re-plannings, if any; ``plan`` the cost plan (``innaudit.run.plan``); ``repair`` what
    ``innaudit repair`` did; ``world_size`` the processes of a ``torchrun`` job (when over 1).
    """

    seed: int | None = None
    started_at: str | None = None
    device: str | None = None
    dtype: str | None = None
    versions: Mapping[str, str] | None = None
    platform: str | None = None
    threads: int | Mapping[str, Any] | None = None
    float32_matmul_precision: str | None = None
    deterministic_algorithms: bool | None = None
    datasets: Sequence[Mapping[str, Any]] | None = None
    config: Mapping[str, Any] | None = None
    world_size: int | None = None
    duration_s: float | None = None
    plan: Mapping[str, Any] | None = None
    replans: tuple[Mapping[str, Any], ...] = ()
    repair: Mapping[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class TargetRecord(_Record):
    """The report's ``target`` block: what was audited.

    ``model`` is the MODEL argument (or the model's name), ``sha256`` the checkpoint's digest,
    ``loader`` how it was read (``native``, ``python``, ``factory-file``...), ``info`` the model's
    metadata (``InvertibleModel.info``), ``latent_shape`` one ``z``'s shape and ``latent_levels``
    the levels of a multi-scale latent; a loader's other details are in ``extra``.
    """

    model: str | None = None
    sha256: str | None = None
    loader: str | None = None
    info: Mapping[str, Any] | None = None
    latent_shape: Sequence[int] | None = None
    latent_levels: Sequence[Mapping[str, Any]] | None = None
