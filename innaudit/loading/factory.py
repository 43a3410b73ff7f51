"""``package.module:callable`` and ``path/to/file.py:callable`` factories, and ``--weights``.

A factory is user code the user named explicitly, so importing it is their decision; the weights
file it is paired with is still untrusted data and goes through the weights-only loader.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from innaudit.core.errors import LoadError, UnsafeCheckpointError, clean_text
from innaudit.loading.native import is_native
from innaudit.loading.prefixes import strip_prefix
from innaudit.safeio.checkpoint import TRUST_HINT, CheckpointFile, FileFormat, load_weights_only, read_checkpoint
from innaudit.safeio.preflight import Limits

__all__ = ["is_factory_spec", "load_state_dict_into", "resolve_factory", "select_state_dict"]

_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_factory_spec(spec: str) -> bool:
    """True when ``spec`` reads as ``module:callable`` or ``file.py:callable``."""
    if ":" not in spec:
        return False
    left, _, right = spec.rpartition(":")
    return bool(right.isidentifier() and (left.endswith(".py") or _DOTTED.match(left)))


def resolve_factory(spec: str) -> tuple[Any, str]:
    """Import the callable named by ``spec``, call it with no arguments, return its result.

    Returns:
        ``(object built by the factory, "file"|"module")``.
    """
    left, _, name = spec.rpartition(":")
    if left.endswith(".py"):
        module, kind = _import_file(Path(left)), "file"
    else:
        module, kind = _import_module(left), "module"
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n]))
        raise LoadError(f"{left} has no callable {name!r}; callables found: {', '.join(found[:12]) or 'none'}")
    try:
        return factory(), kind
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit from a factory is a load error, never exit 0
        raise LoadError(f"factory {spec} raised {type(exc).__name__}: {exc}") from None


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise LoadError(f"factory file {str(path)!r} does not exist")
    name = f"innaudit_factory_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit at import time too
        raise LoadError(f"importing {path} raised {type(exc).__name__}: {exc}") from None
    return module


def _import_module(dotted: str) -> Any:
    try:
        return importlib.import_module(dotted)
    except ImportError as exc:
        raise LoadError(
            f"module {dotted!r} cannot be imported ({exc}); is it installed, or did you mean a file path ending in .py?"
        ) from None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def select_state_dict(obj: Any, key: str | None, source: str) -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded weights file.

    Args:
        obj: what the weights-only loader returned.
        key: ``--weights-key``, a dotted path into nested dicts (``"model"``, ``"ema.state"``).
        source: the file name, for messages.
    """
    if is_native(obj):
        obj = obj["state_dict"]
    if key:
        for part in key.split("."):
            if not isinstance(obj, Mapping) or part not in obj:
                keys = ", ".join(map(str, list(obj)[:12])) if isinstance(obj, Mapping) else "none"
                raise LoadError(
                    f"--weights-key {key!r}: {source} has no entry {part!r}; entries: {clean_text(keys, 300)}"
                )
            obj = obj[part]
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        nested = [str(k) for k, v in obj.items() if _is_state_dict(v)]
        hint = f"; entries holding tensors: {', '.join(nested)}" if nested else ""
        raise LoadError(
            f"{source} is a dict of several entries, not a state dict; name one with "
            f"--weights-key{clean_text(hint, 300)}"
        )
    raise LoadError(f"{source} holds a {type(obj).__name__}; expected a state dict of tensors")


WEIGHTS_HINT = (
    "a weights file needs no code: save it with torch.save(model.state_dict()) or as "
    "safetensors (--trust-checkpoint applies to MODEL only)"
)


def _read_weights(ckpt: CheckpointFile, limits: Limits | None) -> Any:
    """A ``.safetensors`` file through its own checked reader, anything else weights-only."""
    if ckpt.format is FileFormat.SAFETENSORS:
        from innaudit.loading.safetensors_io import read_safetensors

        return read_safetensors(ckpt, limits)
    try:
        return load_weights_only(ckpt, limits=limits)
    except UnsafeCheckpointError as exc:  # --trust-checkpoint does not apply to --weights
        raise UnsafeCheckpointError(str(exc).replace(TRUST_HINT, WEIGHTS_HINT)) from None


def load_state_dict_into(
    module: nn.Module, path: Path, key: str | None, limits: Limits | None = None
) -> tuple[str, str]:
    """Load ``--weights`` into ``module`` strictly, stripping a training wrapper's key prefix
    (DataParallel's ``module.``, ``torch.compile``'s ``_orig_mod.``, Lightning's ``net.``, an
    EMA copy's ``ema.``: :func:`~innaudit.loading.prefixes.strip_prefix`); returns the sha256
    of the bytes loaded (the file is read once) and the prefix stripped (``""`` for none)."""
    ckpt = read_checkpoint(path, limits)
    state = select_state_dict(_read_weights(ckpt, limits), key, str(path))
    prefix = ""
    if all(k.startswith("module.") for k in state):
        state, prefix = {k[len("module.") :]: v for k, v in state.items()}, "module."
    state, more = strip_prefix(state, module.state_dict().keys())
    prefix += more
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when strict=False
        raise LoadError(f"{path} does not fit {type(module).__name__}: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise LoadError(
            f"{path} does not fit {type(module).__name__}: missing keys "
            f"{clean_text(result.missing_keys[:5], 300)}, unexpected keys "
            f"{clean_text(result.unexpected_keys[:5], 300)}; check --weights-key or the factory"
        )
    return ckpt.sha256, prefix
