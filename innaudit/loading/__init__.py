"""From the MODEL argument to an :class:`~innaudit.model.InvertibleModel`.

MODEL is a native checkpoint (``innaudit.save_checkpoint``), a ``module:callable`` /
``file.py:callable`` factory (with optional ``--weights``), or, only with ``trust=True``, a whole
pickled module. Every file read goes through :mod:`innaudit.loading.safe`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..domain import DataDomain
from ..errors import LoadError, UnsafeCheckpointError
from ..model import InvertibleModel
from .adapt import adapt_module, declared_domain
from .factory import is_factory_spec, load_state_dict_into, resolve_factory
from .native import is_native, parse_native
from .safe import load_trusted, load_weights_only

__all__ = ["LoadedModel", "file_sha256", "load_model"]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to audit, with what the report says about where it came from."""

    model: InvertibleModel
    target: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    weights_key: str | None = None,
    trust: bool = False,
    fallback_domain: Callable[[], DataDomain] | None = None,
) -> LoadedModel:
    """Load the MODEL argument.

    Args:
        spec: a checkpoint path or a ``module:callable`` / ``file.py:callable`` factory.
        weights: a state-dict file to load into a factory's model.
        weights_key: the entry of a training dict that holds the state dict.
        trust: allow whole pickled modules (code) to load; recorded in the report.
        fallback_domain: called when the model declares no data domain (e.g. derived from the
            ``--data`` file); without it such a model is an error.
    """
    if is_factory_spec(spec) and not Path(spec).is_file():
        return _from_factory(spec, weights, weights_key, fallback_domain)
    if weights:
        raise LoadError("--weights goes with a factory MODEL (file.py:callable); a checkpoint "
                        "file already holds its weights")
    return _from_file(Path(spec), trust, fallback_domain)


def _domain(module: nn.Module, fallback: Callable[[], DataDomain] | None, what: str) -> DataDomain:
    domain = declared_domain(module)
    if domain is not None:
        return domain
    if fallback is None:
        raise LoadError(f"{what} does not declare its input shape; pass --data FILE (its shape and "
                        "range are used) or set input_shape / data_range on the module")
    return fallback()


def _from_factory(spec: str, weights: str | None, weights_key: str | None,
                  fallback: Callable[[], DataDomain] | None) -> LoadedModel:
    built, kind = resolve_factory(spec)
    if isinstance(built, InvertibleModel):
        return LoadedModel(built, {"model": spec, "loader": f"factory-{kind}"})
    if not isinstance(built, nn.Module):
        raise LoadError(f"factory {spec} returned {type(built).__name__}; expected a "
                        "torch.nn.Module with forward and inverse")
    target: dict[str, Any] = {"model": spec, "loader": f"factory-{kind}"}
    if weights:
        path = Path(weights)
        load_state_dict_into(built, path, weights_key)
        target.update(weights=str(path), weights_sha256=file_sha256(path), weights_key=weights_key)
    source = {"factory": spec, "weights": weights or ""}
    model = adapt_module(built, _domain(built, fallback, spec), source)
    return LoadedModel(model, target)


def _from_file(path: Path, trust: bool, fallback: Callable[[], DataDomain] | None) -> LoadedModel:
    target: dict[str, Any] = {"model": str(path)}
    try:
        obj = load_weights_only(path)
    except UnsafeCheckpointError:
        if not trust:
            raise
        obj = load_trusted(path)
        target.update(loader="trusted-pickle", trusted=True)
        warning = (f"{path} was loaded with --trust-checkpoint: it holds code, which ran while "
                   "loading; audit only files you made yourself")
        model = adapt_module(obj, _domain(obj, fallback, str(path)), {"file": str(path)}) \
            if isinstance(obj, nn.Module) else _not_a_model(path, obj)
        target.update(sha256=file_sha256(path), size=path.stat().st_size)
        return LoadedModel(model, target, (warning,))
    target.update(sha256=file_sha256(path), size=path.stat().st_size)
    if is_native(obj):
        module, arch, domain, provenance = parse_native(obj)
        target.update(loader="native", architecture=arch, provenance=provenance)
        return LoadedModel(adapt_module(module, domain, {"file": str(path)}, arch), target)
    return _not_a_model(path, obj)


def _not_a_model(path: Path, obj: Any) -> InvertibleModel:
    if isinstance(obj, dict):
        raise LoadError(f"{path} holds weights but no architecture; give a factory: "
                        f"innaudit run file.py:build --weights {path}")
    raise LoadError(f"{path} holds a {type(obj).__name__}; expected an innaudit checkpoint "
                    "(innaudit.save_checkpoint) or a state dict with a factory")
