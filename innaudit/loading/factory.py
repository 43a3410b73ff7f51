"""``package.module:callable`` and ``path/to/file.py:callable`` factories, and ``--weights``.

A factory is user code the user named explicitly, so importing it is their decision; the weights
file it is paired with is still untrusted data and goes through the weights-only loader. A
factory file's own folder goes first on ``sys.path`` before it is imported, as ``python file.py``
puts it, so the file can import the modules beside it.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from torch import nn

from innaudit.core.errors import LoadError, UnsafeCheckpointError, clean_text
from innaudit.loading.native import is_native
from innaudit.safeio.checkpoint import TRUST_HINT, CheckpointFile, FileFormat, load_weights_only, read_checkpoint
from innaudit.safeio.preflight import Limits

__all__ = ["is_factory_spec", "load_state_dict_into", "resolve_factory"]

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
    folder = str(path.resolve().parent)
    if folder not in sys.path:  # its siblings import as `python file.py` would have them
        sys.path.insert(0, folder)
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
) -> tuple[str, dict[str, Any]]:
    """Load ``--weights`` into ``module`` strictly, the state dict found by the rules of
    :mod:`innaudit.loading.keys` (training dicts, Lightning, EMA, ``module.`` / ``_orig_mod.``
    prefixes); a ``*.index.json`` names sharded safetensors or torch files
    (:mod:`innaudit.loading.shards`). Returns the sha256 of the bytes loaded (each file is read
    once) and what the report says of the reading."""
    from innaudit.loading.keys import resolve_state_dict
    from innaudit.loading.shards import is_index, read_sharded

    if is_index(path):
        obj, digest, shards = read_sharded(path, limits, _read_weights)
    else:
        ckpt = read_checkpoint(path, limits)
        obj, digest, shards = _read_weights(ckpt, limits), ckpt.sha256, None
    if is_native(obj):
        obj = obj["state_dict"]
    reading = resolve_state_dict(obj, module, key, str(path))
    try:
        module.load_state_dict(reading.state, strict=True)
    except RuntimeError as exc:  # a dtype the parameter cannot take, after the key and shape checks
        raise LoadError(f"{path} does not fit {type(module).__name__}: {clean_text(exc, 300)}") from None
    described = reading.describe()
    if shards is not None:
        described["shards"] = shards
    return digest, described
