"""Leaving a training run as it was: modes, random number generators, gradients and the model.

A monitor check runs between two optimizer steps. Whatever it does must not change what the next
step computes, so :func:`preserved` saves and restores everything a check could touch: each
sub-module's train/eval flag, the torch (CPU and every initialized CUDA device), numpy and Python
random states, each parameter's ``.grad``, and the model itself (:class:`ModelState`): every
parameter and buffer (the same objects, their bytes), and every sub-module's own attributes:
plain values such as the ``initialized = False`` flag of a Glow-port ActNorm, tensors kept as
plain attributes, lists, dicts and sets, attributes added by the check, and the class.

A data-dependent initialization that the check would trigger (ActNorm fills its bias and scale
from the first batch it sees) is therefore undone, and the next training step initializes it
from its own batch, as without the monitor. :meth:`ModelState.restore` returns what had changed,
so the check can report it: its numbers belong to the model as it was after the change.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ModelState", "mutation_message", "preserved"]

_TABLES = ("_parameters", "_buffers", "_modules")
"""Entries of a module's ``__dict__`` restored entry by entry (their dicts stay the same objects)."""
_LABELS = {"_parameters": "param", "_buffers": "buffer", "_modules": "module"}
_OWN = (*_TABLES, "training")
"""Not compared as attributes: the tables, and the train/eval flag (a check runs in eval mode)."""


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, for a bitwise comparison (NaN equals the same NaN, -0.0 differs from 0.0)."""
    flat = t.detach().reshape(-1).contiguous()
    return flat.view(torch.uint8) if flat.numel() else flat


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    return bool(torch.equal(_bytes(a), _bytes(b)))


def _put_back(obj: torch.Tensor, saved: torch.Tensor) -> None:
    """Make ``obj`` hold ``saved`` again: in place when the shape and dtype still fit."""
    with torch.no_grad():
        if obj.shape == saved.shape and obj.dtype == saved.dtype and obj.device == saved.device:
            obj.copy_(saved)
        else:
            obj.data = saved.clone()


def _copy(value: Any) -> Any:
    """What is kept of one attribute: a clone of a tensor, a shallow copy of a container."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, dict, set)):
        return type(value)(value) if type(value) in (list, dict, set) else value.copy()
    return None


@dataclass
class _Module:
    """One sub-module's state."""

    module: nn.Module
    cls: type
    attrs: dict[str, Any]
    copies: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    tensors: dict[str, torch.Tensor | None] = field(default_factory=dict)

    @classmethod
    def of(cls, module: nn.Module) -> _Module:
        attrs = {k: v for k, v in vars(module).items() if k not in _OWN}
        tables = {name: dict(getattr(module, name)) for name in _TABLES}
        tensors = {
            f"{kind}:{name}": (None if t is None else t.detach().clone())
            for kind in ("_parameters", "_buffers")
            for name, t in tables[kind].items()
        }
        copies = {k: _copy(v) for k, v in attrs.items()}
        return cls(module, type(module), attrs, copies, tables, tensors)

    def restore(self, prefix: str) -> list[str]:
        """Put everything back; the names of what had changed."""
        found: list[str] = []
        module = self.module
        if type(module) is not self.cls:
            found.append(f"class:{prefix or '(model)'}")
            module.__class__ = self.cls
        found += self._restore_tables(prefix)
        found += self._restore_attrs(prefix)
        return found

    def _restore_tables(self, prefix: str) -> list[str]:
        found: list[str] = []
        for kind in _TABLES:
            table, saved, label = getattr(self.module, kind), self.tables[kind], _LABELS[kind]
            if kind == "_modules":
                if any(table.get(n) is not m for n, m in saved.items()):
                    found.append(f"{label}:{prefix or '(model)'}")
            else:
                for name, obj in saved.items():
                    clone = self.tensors[f"{kind}:{name}"]
                    replaced = table.get(name) is not obj
                    if replaced or (obj is not None and clone is not None and not _same(obj, clone)):
                        found.append(f"{label}:{prefix}{name}")
                        if obj is not None and clone is not None:
                            _put_back(obj, clone)
            found += [f"{label}:{prefix}{n}" for n in sorted(set(table) ^ set(saved))]
            table.clear()
            table.update(saved)
        return found

    def _restore_attrs(self, prefix: str) -> list[str]:
        found: list[str] = []
        state = vars(self.module)
        for name in sorted(set(state) - set(self.attrs) - set(_OWN)):
            found.append(f"attr:{prefix}{name}")
            del state[name]
        for name, value in self.attrs.items():
            if _attr_changed(state.get(name, _MISSING), value, self.copies[name]):
                found.append(f"attr:{prefix}{name}")
            _restore_value(value, self.copies[name])
            state[name] = value
        return found


_MISSING = object()


def _attr_changed(now: Any, value: Any, copy: Any) -> bool:
    if now is not value:
        return True
    if isinstance(value, torch.Tensor):
        return not _same(value, copy)
    if isinstance(value, (list, dict, set)):
        try:
            return bool(value != copy)
        except Exception:  # elements that cannot be compared: assume the worst, restore
            return True
    return False


def _restore_value(value: Any, copy: Any) -> None:
    """Undo an in-place change of a tensor or container kept as a plain attribute."""
    if isinstance(value, torch.Tensor) and copy is not None and not _same(value, copy):
        _put_back(value, copy)
    elif isinstance(value, list) and copy is not None:
        value[:] = copy
    elif isinstance(value, (dict, set)) and copy is not None:
        value.clear()
        value.update(copy)


@dataclass
class ModelState:
    """Every sub-module's parameters, buffers and own attributes, to be put back exactly.

    Objects referenced from a module but not held by it (a helper object's own state, a
    global) are outside the snapshot.
    """

    modules: list[tuple[str, _Module]]

    @classmethod
    def of(cls, model: nn.Module) -> ModelState:
        """Take the snapshot (a clone of every tensor the model holds)."""
        return cls([(f"{name}." if name else "", _Module.of(m)) for name, m in model.named_modules()])

    def restore(self) -> list[str]:
        """Restore the snapshot; the names of the entries that had changed (sorted, unique)."""
        found: list[str] = []
        for prefix, state in self.modules:
            found += state.restore(prefix)
        return sorted(set(found))


@contextlib.contextmanager
def preserved(module: nn.Module, changes: list[str] | None = None) -> Iterator[None]:
    """Run the body under ``torch.no_grad()`` and put back modes, RNG states, gradients and the
    model (:class:`ModelState`); what had changed in the model is appended to ``changes``."""
    modes = [(m, m.training) for m in module.modules()]
    params = list(module.parameters())
    grads = [p.grad for p in params]
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    state = ModelState.of(module)
    try:
        with torch.no_grad():
            yield
    finally:
        found = state.restore()
        if changes is not None:
            changes += found
        for m, training in modes:
            m.training = training
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def mutation_message(changes: list[str]) -> str:
    """The finding's sentence for a model that changed during a check (and was put back)."""
    shown = ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")
    return (
        f"the model changed during the check ({shown}); it was put back as it was, so training "
        "is unchanged, but this check measured the changed model (data-dependent "
        "initialization such as ActNorm's, triggered by the check?)"
    )
