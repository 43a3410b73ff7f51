"""The model a repair works on: how it was given, how it loads, and how its repair loads back.

Three kinds:

- ``native``: an innaudit checkpoint; the repair writes a native ``repaired`` checkpoint, which
  is rebuilt from its bytes for the re-audit (what ``innaudit run fixed.pt`` would load);
- ``factory``: ``file.py:callable`` or ``package.module:callable`` (with ``--weights``); the repair
  writes a state dict, and the re-audit builds the factory afresh, loads that state dict into it
  strictly and applies the bounded scales with :func:`~innaudit.remedies.bounded_scale.bound_scales`,
  as the user's factory would;
- ``object``: a model object given to :func:`innaudit.repair` in Python; the repair writes its
  state dict, and the re-audit audits the repaired object itself (there is nothing to rebuild
  it from).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError, UsageError
from innaudit.loading import LoadedModel, load_model, load_object
from innaudit.loading.adapt import adapt_module
from innaudit.loading.factory import is_factory_spec, resolve_factory
from innaudit.loading.native import parse_native
from innaudit.model.contract import InvertibleModel
from innaudit.model.integrity import set_init_flags
from innaudit.remedies.bounded_scale import bound_scales
from innaudit.remedies.checkpoint import NativeSource, parse_bytes, read_native

__all__ = ["FACTORY", "NATIVE", "OBJECT", "Subject", "load_subject", "rebuilt"]

NATIVE, FACTORY, OBJECT = "native", "factory", "object"


@dataclass(frozen=True)
class Subject:
    """A loaded model and where it came from."""

    kind: str
    given: Any
    """The MODEL argument (a path or factory string) or the object."""
    loaded: LoadedModel
    native: NativeSource | None = None
    weights: str | None = None
    weights_key: str | None = None

    @property
    def model(self) -> InvertibleModel:
        """The model the remedies change in place."""
        return self.loaded.model

    @property
    def name(self) -> str:
        """How the reports name the source model."""
        return str(self.loaded.target.get("model", self.given))


def load_subject(
    model: Any,
    weights: str | None,
    weights_key: str | None,
    trust: bool,
    fallback: Callable[[], DataDomain] | None,
) -> Subject:
    """Load the MODEL argument (or object) the way ``innaudit run`` does, and tell its kind."""
    if not isinstance(model, (str, os.PathLike)):
        if weights is not None:
            raise UsageError("weights= goes with a factory MODEL string; load them into the object yourself")
        return Subject(OBJECT, model, load_object(model, fallback_domain=fallback))
    spec = os.fspath(model)
    if is_factory_spec(spec) and not Path(spec).is_file():
        loaded = load_model(spec, weights=weights, weights_key=weights_key, fallback_domain=fallback)
        return Subject(FACTORY, spec, loaded, weights=weights, weights_key=weights_key)
    if trust:
        raise UsageError(
            "repair does not take --trust-checkpoint: a pickled module cannot be rebuilt from what a repair "
            "writes; save its state dict and give a factory with --weights"
        )
    native = read_native(spec)
    if native is None:
        load_model(spec, fallback_domain=fallback)  # says what the file is instead
        raise LoadError(f"{spec} is not a native innaudit checkpoint; give a factory with --weights")
    return Subject(NATIVE, spec, load_model(spec), native=native)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rebuilt(
    subject: Subject, data: bytes, clamps: Mapping[str, float], output: str | None
) -> tuple[InvertibleModel, dict[str, Any]]:
    """The repaired model as the re-audit loads it from ``data`` (with the source's data domain),
    and the report's target block."""
    name = output or f"<repair of {subject.name}>"
    target: dict[str, Any] = {"model": name, "sha256": _sha256(data), "size": len(data)}
    if subject.kind == NATIVE:
        module, arch, domain, provenance = parse_native(parse_bytes(data))
        target.update(loader="native", architecture=arch, provenance=provenance)
        return adapt_module(module, domain, {"file": name}, arch), target
    if subject.kind == FACTORY:
        built, kind = resolve_factory(str(subject.given))
        if not isinstance(built, nn.Module):
            raise LoadError(f"factory {subject.given} no longer returns an nn.Module")
        _load_state(built, parse_bytes(data))
        set_init_flags(built)
        bound_scales(built, clamps)
        target = {
            "model": str(subject.given),
            "loader": f"factory-{kind}",
            "weights": name,
            "weights_sha256": target["sha256"],
        }
        if clamps:
            target["bound_scales"] = dict(clamps)
        domain = subject.model.info.domain
        return load_object(built, fallback_domain=lambda: domain).model, target
    target.update(model=subject.name, loader="python", weights_sha256=target.pop("sha256"))
    return subject.model, target


def _load_state(module: nn.Module, state: Any) -> None:
    if not isinstance(state, dict):
        raise LoadError(f"the repaired state dict is a {type(state).__name__}; expected a dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise LoadError(f"the repaired state dict does not load back into the factory: {exc}") from None
