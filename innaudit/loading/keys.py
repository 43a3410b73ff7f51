"""Finding the state dict in a weights file as people save them, for a factory's module.

A weights file is a state dict, or a dict that holds one somewhere: a training dict
(``{"model": ..., "optimizer": ...}``, ignite's and most loops'), a Lightning ``.ckpt``
(``state_dict`` whose keys carry the LightningModule's attribute, ``model.`` / ``net.``), an EMA
copy (``ema``, ``ema_model``, ``net.model.``) or torch_ema's ``shadow_params`` list, with the
prefixes ``nn.DataParallel`` / DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add.

A *reading* is one way to get the module's state dict out of the file: a path of dict entries
(``state_dict``), then the prefix stripped from the keys there (``model.``). It *fits* when its
keys are exactly the module's ``state_dict()`` keys and every shape agrees. Rules:

- the readings are every dict of tensors up to 4 levels deep, each with every prefix (ending in
  ``.``) that makes it fit; keys under other prefixes are other parts of a training module
  (a loss, a discriminator) and are left out; a ``shadow_params`` list fits when its tensors
  match ``module.parameters()`` in order and shape (the buffers then come from the one other
  reading that fits, or the module must have none);
- readings whose tensors are identical count as one (the first);
- exactly one fitting reading is used, and the report records it (``weights_key``, ``stripped``);
- several: an error listing each with the ``--weights-key`` that picks it (``PATH`` or
  ``PATH@PREFIX``); none: an error naming the closest reading and its missing / unexpected keys.

``--weights-key PATH[@PREFIX]`` narrows the search to the entry at the dotted ``PATH`` (and the
prefix, when given); the same fitting rules apply inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from innaudit.core.errors import LoadError, clean_text

__all__ = ["Reading", "resolve_state_dict"]

_DEPTH = 4


@dataclass(frozen=True)
class Reading:
    """One way to read the module's state dict out of a weights file."""

    path: tuple[str, ...]
    prefix: str
    state: dict[str, Tensor]
    shadow: bool = False

    @property
    def key(self) -> str:
        """The ``--weights-key`` that picks this reading."""
        path = ".".join(self.path)
        return f"{path}@{self.prefix}" if self.prefix else path

    def describe(self) -> dict[str, Any]:
        """Plain data for the report's ``target`` block."""
        where = ".".join(self.path) or "(top level)"
        return {
            "weights_key": self.key or None,
            "entry": where,
            "stripped": self.prefix or None,
            "ema_shadow": self.shadow,
        }


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _is_shadow(path: tuple[str, ...], obj: Any) -> bool:
    return (
        bool(path)
        and path[-1] == "shadow_params"
        and isinstance(obj, (list, tuple))
        and bool(obj)
        and all(isinstance(t, Tensor) for t in obj)
    )


def _containers(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every dict of tensors and ``shadow_params`` list under ``obj``, depth first."""
    if _is_tensor_dict(obj) or _is_shadow(path, obj):
        return [(path, obj)]
    if not isinstance(obj, Mapping) or len(path) >= _DEPTH:
        return []
    found = []
    for key, value in obj.items():
        if isinstance(key, str):
            found += _containers(value, (*path, key))
    return found


def _prefixes(keys: Sequence[str], wanted: Mapping[str, Tensor]) -> list[str]:
    """Prefixes ``P`` (``""`` or ending in ``.``) such that ``P + k`` is a key for the anchor ``k``."""
    anchor = next(iter(wanted))
    found = {k[: len(k) - len(anchor)] for k in keys if k.endswith(anchor)}
    return sorted(p for p in found if p == "" or p.endswith("."))


def _fits(state: Mapping[str, Tensor], wanted: Mapping[str, Tensor]) -> bool:
    return state.keys() == wanted.keys() and all(state[k].shape == wanted[k].shape for k in wanted)


def _stripped(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _dict_readings(
    path: tuple[str, ...], state: Mapping[str, Tensor], wanted: Mapping[str, Tensor], prefix: str | None
) -> list[Reading]:
    prefixes = [prefix] if prefix is not None else _prefixes(list(state), wanted)
    readings = []
    for p in prefixes:
        sub = _stripped(state, p)
        if p == "" and len(sub) != len(state):
            continue
        if _fits(sub, wanted):
            readings.append(Reading(path, p, sub))
    return readings


def _shadow_reading(
    path: tuple[str, ...], shadow: Sequence[Tensor], module: nn.Module, others: list[Reading]
) -> Reading | None:
    names = [n for n, _ in module.named_parameters()]
    params = dict(module.named_parameters())
    if len(shadow) != len(names) or any(t.shape != params[n].shape for t, n in zip(shadow, names, strict=True)):
        return None
    buffers = {k: v for k, v in module.state_dict().items() if k not in params}
    if buffers:
        if len(others) != 1:
            return None
        buffers = {k: others[0].state[k] for k in buffers}
    return Reading(path, "", {**dict(zip(names, shadow, strict=True)), **buffers}, shadow=True)


def _same(a: Reading, b: Reading) -> bool:
    return a.state.keys() == b.state.keys() and all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def _unique(readings: list[Reading]) -> list[Reading]:
    kept: list[Reading] = []
    for reading in readings:
        if not any(_same(reading, k) for k in kept):
            kept.append(reading)
    return kept


def _navigate(obj: Any, key: str, source: str) -> tuple[Any, tuple[str, ...], str | None]:
    path_text, at, prefix = key.partition("@")
    path = tuple(p for p in path_text.split(".") if p)
    for part in path:
        if not isinstance(obj, Mapping) or part not in obj:
            keys = ", ".join(map(str, list(obj)[:12])) if isinstance(obj, Mapping) else "none"
            raise LoadError(f"--weights-key {key!r}: {source} has no entry {part!r}; entries: {clean_text(keys, 300)}")
        obj = obj[part]
    return obj, path, (prefix if at else None)


def _plain(found: list[tuple[tuple[str, ...], Any]], wanted: Mapping[str, Tensor], prefix: str | None) -> list[Reading]:
    return _unique([r for path, c in found if not _is_shadow(path, c) for r in _dict_readings(path, c, wanted, prefix)])


def _readings(obj: Any, whole: Any, base: tuple[str, ...], module: nn.Module, prefix: str | None) -> list[Reading]:
    """The fitting readings under ``obj`` (the entry at ``base`` of the file ``whole``); EMA
    shadow parameters take their buffers from the file's one plain reading."""
    wanted = module.state_dict()
    if not wanted:
        raise LoadError(f"{type(module).__name__} has no parameters or buffers to load weights into")
    found = _containers(obj, base) if not _is_shadow(base, obj) else [(base, obj)]
    plain = _plain(found, wanted, prefix)
    everywhere = plain if obj is whole else _plain(_containers(whole), wanted, None)
    shadows = [_shadow_reading(path, c, module, everywhere) for path, c in found if _is_shadow(path, c)]
    return _unique(plain + [s for s in shadows if s is not None])


def _closest(obj: Any, module: nn.Module) -> str:
    """What the nearest reading lacks and has too many of, for the no-fit message."""
    wanted = module.state_dict()
    best: tuple[int, str] | None = None
    for path, container in _containers(obj):
        if not isinstance(container, Mapping):
            continue
        for p in _prefixes(list(container), wanted) or [""]:
            sub = _stripped(container, p)
            missing = sorted(set(wanted) - set(sub))
            extra = sorted(set(sub) - set(wanted))
            shapes = sorted(k for k in set(sub) & set(wanted) if sub[k].shape != wanted[k].shape)
            score = len(missing) + len(extra) + len(shapes)
            where = ".".join(path) or "the top level"
            text = (
                f"closest reading: {where}{f' with prefix {p!r} stripped' if p else ''}: missing keys "
                f"{missing[:5]}, unexpected keys {extra[:5]}" + (f", shapes differ for {shapes[:5]}" if shapes else "")
            )
            if best is None or score < best[0]:
                best = (score, text)
    return clean_text(best[1], 500) if best else "it holds no dict of tensors"


def resolve_state_dict(obj: Any, module: nn.Module, key: str | None, source: str) -> Reading:
    """The one reading of ``obj`` (a loaded weights file) that fits ``module`` (module docstring).

    Raises:
        LoadError: no reading fits, or several do (the message lists the ``--weights-key`` of each).
    """
    base, path, prefix = (obj, (), None) if not key else _navigate(obj, key, source)
    readings = _readings(base, obj, path, module, prefix)
    name = type(module).__name__
    if len(readings) == 1:
        return readings[0]
    if readings:
        listed = "; ".join(
            f"--weights-key {r.key!r} ({'.'.join(r.path) or 'top level'}"
            f"{f', prefix {r.prefix!r} stripped' if r.prefix else ''}{', EMA shadow parameters' if r.shadow else ''})"
            for r in readings
        )
        raise LoadError(
            f"{source} holds {len(readings)} different sets of weights that fit {name}; pick one: {clean_text(listed, 1200)}"
        )
    raise LoadError(
        f"{source} does not fit {name}: no dict of tensors in it has exactly the module's keys and shapes "
        f"({_closest(base, module)}); check --weights-key or the factory"
    )
