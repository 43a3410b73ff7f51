"""Model integrity: the audited model is the model that was given.

A model can rewrite its own state while being audited: ActNorm's data-dependent initialization
(Kingma & Dhariwal, Glow, 2018) sets its bias and scale from the first batch it sees unless its
"initialized" flag is set, and that flag is a plain attribute in many ports, so a state dict
loaded into a fresh module leaves it unset. Every number measured afterwards belongs to another
model. :func:`fingerprint` hashes every parameter and buffer (name -> sha256 of its dtype, shape
and bytes); :func:`changed` names the entries that differ between two fingerprints. The runner
takes one before the first audit, one after it (the first batches) and one at the end; any
change is a report error (exit 2) unless ``allow_mutation`` is set.

:func:`set_init_flags` sets the common ActNorm flags (``initialized``, ``inited``,
``is_initialized``, ``data_dep_init_done``...; attribute or buffer; FrEIA's ``init_on_next_batch``
cleared) of FrEIA, normflows and Glow ports after a state dict is loaded, so that the loaded
statistics are the ones audited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn

__all__ = [
    "INIT_FLAGS",
    "MUTATION_CAUSE",
    "PENDING_FLAGS",
    "changed",
    "fingerprint",
    "mutation_error",
    "set_init_flags",
]

INIT_FLAGS = (
    "initialized",
    "inited",
    "is_initialized",
    "init_done",
    "initialised",
    "_initialized",
    "data_dep_init_done",
)
"""Names of data-dependent-initialization flags ("already initialized" when true) in common
ActNorm implementations: Glow ports (``initialized``, ``inited``), FrEIA's older
``is_initialized`` buffer, normflows' ``data_dep_init_done`` buffer."""

PENDING_FLAGS = ("init_on_next_batch",)
"""Flags of the opposite sense ("will initialize from the next batch" when true): FrEIA."""

MUTATION_CAUSE = (
    "likely cause: data-dependent initialization (ActNorm?) ran during the audit: "
    "load a model whose init flag is set, or pass --allow-mutation to audit it anyway"
)


def _digest(t: torch.Tensor) -> str:
    data = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    if data.numel():
        h.update(
            data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.dtype != torch.bool else data.numpy().tobytes()
        )
    return h.hexdigest()


def fingerprint(module: nn.Module) -> dict[str, str]:
    """``{name: sha256}`` over every parameter and buffer of ``module`` (shared ones once)."""
    out = {f"param:{n}": _digest(p) for n, p in module.named_parameters()}
    out.update({f"buffer:{n}": _digest(b) for n, b in module.named_buffers()})
    return out


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Names whose hash differs, or that appeared or disappeared, sorted."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def mutation_error(names: list[str], when: str) -> str:
    """The report error for a model whose state changed ``when``."""
    shown = ", ".join(n.split(":", 1)[1] for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return (
        f"the model changed {when}: {len(names)} parameter(s)/buffer(s) rewritten ({shown}); "
        f"the results describe another model; {MUTATION_CAUSE}"
    )


def set_init_flags(module: nn.Module) -> list[str]:
    """Set every unset ActNorm-style init flag of ``module``'s submodules; the names set.

    A flag is a bool attribute, or a one-element tensor, named as in :data:`INIT_FLAGS` (set to
    true) or :data:`PENDING_FLAGS` (set to false).
    """
    done = []
    for name, sub in module.named_modules():
        for flag, want in [*((f, True) for f in INIT_FLAGS), *((f, False) for f in PENDING_FLAGS)]:
            value = getattr(sub, flag, None)
            if _set_flag(sub, flag, value, want):
                done.append(f"{name}.{flag}" if name else flag)
    return done


def _set_flag(owner: nn.Module, flag: str, value: object, want: bool) -> bool:
    """Set one flag to ``want`` when it holds the other value; whether it changed."""
    if isinstance(value, bool) and value is not want:
        setattr(owner, flag, want)
        return True
    if isinstance(value, torch.Tensor) and value.numel() == 1 and bool(value.item()) is not want:
        with torch.no_grad():
            value.fill_(1 if want else 0)
        return True
    return False
