"""Training wrappers' key prefixes in a ``--weights`` state dict.

A model trained inside a wrapper is saved with the wrapper's attribute path before every key:
``module.`` (DataParallel / DistributedDataParallel), ``_orig_mod.`` (``torch.compile``),
``net.`` / ``model.`` (Lightning modules), ``ema.`` / ``ema_model.`` / ``net.model.`` (EMA
copies), or several of them stacked. :func:`strip_prefix` finds the prefix whose removal makes
the file's keys exactly the model's keys; when two complete copies sit side by side (a model
and its EMA copy) the EMA copy is taken, as samplers use it, and the choice is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

from innaudit.core.errors import LoadError, clean_text

__all__ = ["strip_prefix"]


def _prefixes(keys: Iterable[str]) -> list[str]:
    """Every dotted prefix (ending in ``.``) of any key, shortest first."""
    found: set[str] = set()
    for key in keys:
        parts = key.split(".")
        for depth in range(1, len(parts)):
            found.add(".".join(parts[:depth]) + ".")
    return sorted(found, key=lambda p: (p.count("."), p))


def strip_prefix(state: Mapping[str, Tensor], wanted: Iterable[str]) -> tuple[dict[str, Tensor], str]:
    """``state`` with the wrapper prefix removed so its keys are ``wanted``, and the prefix
    (``""`` when the keys already fit or no prefix makes them fit: the caller reports the
    mismatch).

    Raises:
        LoadError: several prefixes each give a complete copy of the model and none (or more
            than one) of them is an EMA copy.
    """
    keys = set(wanted)
    if set(state) == keys or not keys:
        return dict(state), ""
    complete = [
        p
        for p in _prefixes(state)
        if {k[len(p) :] for k in state if k.startswith(p)} == keys
        and all(k[len(p) :] for k in state if k.startswith(p))
    ]
    if not complete:
        return dict(state), ""
    if len(complete) > 1:
        ema = [p for p in complete if "ema" in p.lower()]
        if len(ema) != 1:
            raise LoadError(
                f"--weights holds several complete copies of the model under the prefixes "
                f"{clean_text(', '.join(complete[:6]), 200)}; save the one to audit on its own "
                "(torch.save(model.state_dict()))"
            )
        complete = ema
    prefix = complete[0]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, prefix
