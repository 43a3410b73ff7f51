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
``is_initialized``, ``init_done``, ``initialised``; attribute or buffer) of FrEIA, normflows and
Glow ports after a state dict is loaded, so that the loaded statistics are the ones audited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["INIT_FLAGS", "MUTATION_CAUSE", "changed", "fingerprint", "mutation_error", "set_init_flags"]

INIT_FLAGS = ("initialized", "inited", "is_initialized", "init_done", "initialised", "_initialized")
"""Names of data-dependent-initialization flags in common ActNorm implementations."""

MUTATION_CAUSE = ("likely cause: data-dependent initialization (ActNorm?) ran during the audit: "
                  "load a model whose init flag is set, or pass --allow-mutation to audit it anyway")


def _digest(t: torch.Tensor) -> str:
    data = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    if data.numel():
        h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes()
                 if data.dtype != torch.bool else data.numpy().tobytes())
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
    return (f"the model changed {when}: {len(names)} parameter(s)/buffer(s) rewritten ({shown}); "
            f"the results describe another model; {MUTATION_CAUSE}")


def set_init_flags(module: nn.Module) -> list[str]:
    """Set every unset ActNorm-style init flag of ``module``'s submodules; the names set.

    A flag is a bool attribute, or a one-element buffer, named as in :data:`INIT_FLAGS`.
    """
    done = []
    for name, sub in module.named_modules():
        for flag in INIT_FLAGS:
            value = getattr(sub, flag, None)
            where = f"{name}.{flag}" if name else flag
            if isinstance(value, bool) and not value:
                setattr(sub, flag, True)
                done.append(where)
            elif isinstance(value, torch.Tensor) and value.numel() == 1 and not bool(value.item()):
                with torch.no_grad():
                    value.fill_(1)
                done.append(where)
    return done
