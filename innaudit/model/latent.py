"""Latent structure: a latent ``z`` that is a tensor or a (nested) list/tuple/dict of tensors.

Multi-scale flows (Glow, RealNVP) factor out part of the state at every level, so data -> latent
returns several tensors, one per level. Audits need two views of such a latent:

- a flat per-sample view ``(B, D)`` for norms, non-finite masks, Jacobians and prior draws:
  the leaves, each reshaped to ``(B, -1)``, concatenated in leaf order;
- the structure, where it matters: which level overflowed, per-level priors and temperatures.

:class:`LatentStructure` describes the tree once (leaf paths, per-sample shapes) and converts
between the two views with :meth:`LatentStructure.flatten` and :meth:`LatentStructure.unflatten`.
Leaf order is the order of the container (list/tuple index, dict insertion order), depth first;
``flatten(unflatten(f)) == f`` and ``unflatten(flatten(z)) == z`` exactly (reshapes only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["LatentStructure", "LevelStats", "is_structured", "split_output"]

Tree = tuple[Any, ...]
"""``("leaf",)``, ``("list", children)``, ``("tuple", children)`` or ``("dict", keys, children)``."""


def is_structured(z: Any) -> bool:
    """True when ``z`` is a list/tuple/dict of tensors (or of such containers), not one tensor."""
    if isinstance(z, Tensor):
        return False
    if isinstance(z, Mapping):
        return bool(z) and all(isinstance(v, Tensor) or is_structured(v) for v in z.values())
    if isinstance(z, (list, tuple)):
        return bool(z) and all(isinstance(v, Tensor) or is_structured(v) for v in z)
    return False


def split_output(out: Any) -> tuple[Any, Tensor | float | None]:
    """A map's output as ``(z, log_det or None)``; ``z`` a tensor or a structure of tensors.

    ``(z, log_det)`` is recognized when the second element is a tensor of at most one dimension
    (one number per sample, or a scalar) or a plain number; ``z`` itself may then be a structure. A list, tuple or
    dict whose tensors all have a per-sample shape (two or more dimensions) is a structured
    latent. A tuple whose first element is a tensor is otherwise read as ``(z, ...)``.

    Raises:
        TypeError: the output is none of these.
    """
    if isinstance(out, Tensor):
        return out, None
    if (
        isinstance(out, (tuple, list))
        and len(out) == 2
        and _per_sample_scalar(out[1])
        and (isinstance(out[0], Tensor) or is_structured(out[0]))
    ):
        return out[0], out[1]
    if is_structured(out) and all(t.dim() >= 2 for t in _leaves(out)):
        return out, None
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0], out[1] if len(out) >= 2 and isinstance(out[1], Tensor) else None
    raise TypeError(
        f"the model returned {type(out).__name__}; expected a tensor, a (tensor, log_det) "
        "tuple, or a list/tuple/dict of latent tensors"
    )


def _per_sample_scalar(t: Any) -> bool:
    """A log-det: one number per sample, a scalar tensor, or a plain number (a constant map)."""
    return (isinstance(t, Tensor) and t.dim() <= 1) or (isinstance(t, (int, float)) and not isinstance(t, bool))


def _leaves(z: Any) -> list[Tensor]:
    if isinstance(z, Tensor):
        return [z]
    values = z.values() if isinstance(z, Mapping) else z
    return [leaf for v in values for leaf in _leaves(v)]


def _tree(z: Any) -> Tree:
    if isinstance(z, Tensor):
        return ("leaf",)
    if isinstance(z, Mapping):
        return ("dict", tuple(z.keys()), tuple(_tree(v) for v in z.values()))
    return (type(z).__name__ if isinstance(z, tuple) else "list", tuple(_tree(v) for v in z))


def _paths(tree: Tree, prefix: str) -> list[str]:
    if tree[0] == "leaf":
        return [prefix]
    if tree[0] == "dict":
        return [
            p for k, t in zip(tree[1], tree[2], strict=True) for p in _paths(t, f"{prefix}.{k}" if prefix else str(k))
        ]
    return [p for i, t in enumerate(tree[1]) for p in _paths(t, f"{prefix}.{i}" if prefix else str(i))]


@dataclass(frozen=True)
class LatentStructure:
    """The shape of a latent: its tree, leaf paths and per-sample leaf shapes.

    Attributes:
        tree: the container tree (``("leaf",)`` for a single tensor).
        paths: one dotted path per leaf, in leaf order (``"0"``, ``"1"``, ``"mu.2"``; ``""`` for a
            single tensor). Reports call leaf ``i`` "level i".
        shapes: each leaf's per-sample shape (without the batch dimension).
    """

    tree: Tree
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(math.prod(s) for s in self.shapes))

    @classmethod
    def of(cls, z: Any) -> LatentStructure:
        """The structure of a batch ``z`` (a tensor or a structure of batch-first tensors).

        Raises:
            ValueError: the leaves disagree on the batch size.
        """
        leaves = _leaves(z)
        if len({int(t.shape[0]) if t.dim() else -1 for t in leaves}) != 1 or leaves[0].dim() == 0:
            raise ValueError(
                f"the latent's tensors disagree on the batch size (dimension 0): {[tuple(t.shape) for t in leaves]}"
            )
        tree = _tree(z)
        return cls(tree, tuple(_paths(tree, "")), tuple(tuple(int(s) for s in t.shape[1:]) for t in leaves))

    @property
    def single(self) -> bool:
        """True for a plain tensor latent (no structure to keep)."""
        return self.tree == ("leaf",)

    @property
    def dim(self) -> int:
        """Total per-sample dimension ``D`` of the flat view."""
        return sum(self.sizes)

    @property
    def levels(self) -> int:
        """Number of leaves."""
        return len(self.paths)

    def flatten(self, z: Any) -> Tensor:
        """``(B, D)``: every leaf reshaped to ``(B, -1)``, concatenated in leaf order."""
        leaves = _leaves(z)
        return torch.cat([t.reshape(t.shape[0], -1) for t in leaves], dim=1)

    def split(self, flat: Tensor) -> list[Tensor]:
        """The flat view cut into the leaves' flat parts ``(B, size_i)``."""
        return list(torch.split(flat, list(self.sizes), dim=1))

    def unflatten(self, flat: Tensor) -> Any:
        """The structured latent of a flat ``(B, D)`` batch (the inverse of :meth:`flatten`).

        Raises:
            ValueError: ``flat`` is not ``(B, D)`` with this structure's ``D``.
        """
        if flat.dim() != 2 or flat.shape[1] != self.dim:
            raise ValueError(f"a flat latent of shape (batch, {self.dim}) was expected; got {tuple(flat.shape)}")
        parts = iter(p.reshape(len(flat), *s) for p, s in zip(self.split(flat), self.shapes, strict=True))
        return _build(self.tree, parts)

    def leaf(self, flat: Tensor, index: int) -> Tensor:
        """Leaf ``index`` of a flat batch, in its own shape ``(B, *shapes[index])``."""
        return self.split(flat)[index].reshape(len(flat), *self.shapes[index])

    def describe(self) -> list[dict[str, Any]]:
        """Plain data for the report: one ``{"path", "shape"}`` per leaf."""
        return [{"path": p, "shape": list(s)} for p, s in zip(self.paths, self.shapes, strict=True)]


def _build(tree: Tree, parts: Any) -> Any:
    kind = tree[0]
    if kind == "leaf":
        return next(parts)
    if kind == "dict":
        return {k: _build(t, parts) for k, t in zip(tree[1], tree[2], strict=True)}
    children = [_build(t, parts) for t in tree[1]]
    return tuple(children) if kind == "tuple" else children


@dataclass
class LevelStats:
    """Per-level non-finite shares and norm ranges of flat latents ``(B, D)``.

    ``metrics()`` gives ``{"<i>": {"nonfinite_fraction", "norm": {"min", "max"}}}`` with ``i``
    the leaf index; norms are per-sample L2 over the level's elements, over finite samples.
    """

    structure: LatentStructure
    bad: list[list[np.ndarray]] = field(default_factory=list)
    norms: list[list[np.ndarray]] = field(default_factory=list)

    def add(self, flat: Tensor) -> None:
        """Record one batch of flat latents."""
        if not self.bad:
            self.bad = [[] for _ in self.structure.paths]
            self.norms = [[] for _ in self.structure.paths]
        for i, part in enumerate(self.structure.split(flat.detach())):
            finite = torch.isfinite(part).all(1)
            self.bad[i].append((~finite).cpu().numpy())
            norm = torch.linalg.vector_norm(part.double(), dim=1)
            self.norms[i].append(norm[finite].cpu().numpy())

    def extend(self, other: LevelStats) -> None:
        """Append the batches ``other`` recorded, as if they had been added here in turn."""
        if not other.bad:
            return
        if not self.bad:
            self.bad = [[] for _ in other.bad]
            self.norms = [[] for _ in other.norms]
        for mine, theirs in zip(self.bad, other.bad, strict=True):
            mine.extend(theirs)
        for mine, theirs in zip(self.norms, other.norms, strict=True):
            mine.extend(theirs)

    def metrics(self) -> dict[str, dict[str, Any]]:
        """The per-level metric block (empty before the first batch)."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(len(self.bad)):
            bad, norm = np.concatenate(self.bad[i]), np.concatenate(self.norms[i])
            out[str(i)] = {
                "nonfinite_fraction": float(bad.mean()) if bad.size else 0.0,
                "norm": {
                    "min": float(norm.min()) if norm.size else math.nan,
                    "max": float(norm.max()) if norm.size else math.nan,
                },
            }
        return out
