"""Findings an audit makes before it measures (``gradient``'s stateful layers, iterative
inverses, a chain of blocks that does not compose to the model), as typed records.

A finding carries a :class:`PreflightKind`, so the audit counts findings by kind, never by
searching their wording; the text is the sentence the report shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from torch import nn

from innaudit.model.contract import InverseKind, InvertibleModel

__all__ = ["PreflightFinding", "PreflightKind", "count", "preflight", "texts"]


class PreflightKind(str, Enum):
    """What a preflight finding is about."""

    STATEFUL_LAYERS = "stateful_layers"
    """A block holds BatchNorm, InstanceNorm or Dropout: a training-mode re-run differs."""
    ITERATIVE_INVERSE = "iterative_inverse"
    """The inverse is a solver: reconstructions are as exact as its tolerance."""
    COMPOSITION = "composition"
    """The chain of blocks does not give the model's own output."""


@dataclass(frozen=True)
class PreflightFinding:
    """One finding made before measuring: its ``kind``, the ``block`` it is about ("" for the
    whole model) and the sentence the report shows."""

    kind: PreflightKind
    text: str
    block: str = ""


def count(found: Iterable[PreflightFinding], kind: PreflightKind) -> int:
    """How many of ``found`` are of ``kind``."""
    return sum(1 for f in found if f.kind is kind)


def texts(found: Iterable[PreflightFinding]) -> list[str]:
    """The sentences of ``found``, in order (the report's ``preflight`` metric)."""
    return [f.text for f in found]


_STATEFUL = ("BatchNorm", "Dropout", "InstanceNorm")


def _stateful(module: nn.Module) -> list[str]:
    """Names of the layers inside ``module`` whose training-mode state changes on a re-run
    (dropout with ``p = 0`` is left out: it changes nothing)."""
    return sorted(
        {
            type(m).__name__
            for m in module.modules()
            if any(s in type(m).__name__ for s in _STATEFUL) and getattr(m, "p", 1.0) != 0
        }
    )


def preflight(
    model: InvertibleModel, blocks: Sequence[InvertibleModel], names: Sequence[str]
) -> list[PreflightFinding]:
    """Findings before measuring: layers whose state changes on the re-run, iterative inverses."""
    found: list[PreflightFinding] = []
    for block, name in zip(blocks, names, strict=True):
        layers = _stateful(block.module)
        if layers:
            text = (
                f"block {name} holds {', '.join(layers)}: in training mode the re-run differs "
                "from the forward pass (batch statistics updated twice, a new dropout mask), "
                "so memory-saving gradients differ from these eval-mode numbers"
            )
            found.append(PreflightFinding(PreflightKind.STATEFUL_LAYERS, text, name))
    tol = model.info.inverse_tolerance
    iterative = [
        n
        for b, n in zip(blocks, names, strict=True)
        if b.info.inverse_kind is InverseKind.ITERATIVE or getattr(b.module, "inverse_tolerance", None) is not None
    ]
    if model.info.inverse_kind is InverseKind.ITERATIVE or iterative:
        where = f" (blocks {', '.join(iterative)})" if iterative else ""
        tol_text = f"tolerance {tol:g}" if tol is not None else "tolerance not declared"
        text = f"iterative inverse{where}, {tol_text}: reconstructions are only as exact as the solver"
        found.append(PreflightFinding(PreflightKind.ITERATIVE_INVERSE, text))
    return found
