"""From the MODEL argument to an :class:`~innaudit.model.contract.InvertibleModel`.

MODEL is a native checkpoint (``innaudit.save_checkpoint``), a ``module:callable`` /
``file.py:callable`` factory (with optional ``--weights``), or, only with ``trust=True``, a whole
pickled module. Every file read goes through :mod:`innaudit.safeio.checkpoint`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from torch import nn

from innaudit.core.domain import DataDomain
from innaudit.core.errors import LoadError, UnsafeCheckpointError
from innaudit.loading.adapt import adapt_module, declared_domain
from innaudit.loading.adapters import Adapted, Condition, adapt_object, find_adapter, resolve_condition
from innaudit.loading.factory import is_factory_spec, load_state_dict_into, resolve_factory
from innaudit.loading.native import is_native, parse_native
from innaudit.model.contract import InvertibleModel
from innaudit.model.integrity import set_init_flags
from innaudit.safeio.checkpoint import load_trusted, load_weights_only, read_checkpoint
from innaudit.safeio.preflight import Limits

__all__ = ["LoadedModel", "file_sha256", "load_model", "load_object"]


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
    limits: Limits | None = None,
    condition: str | None = None,
    samples: int | None = None,
) -> LoadedModel:
    """Load the MODEL argument.

    Args:
        spec: a checkpoint path or a ``module:callable`` / ``file.py:callable`` factory.
        weights: a state-dict file to load into a factory's model.
        weights_key: the entry of a training dict that holds the state dict.
        trust: allow whole pickled modules (code) to load; recorded in the report.
        limits: what a checkpoint file may claim (:class:`~innaudit.safeio.preflight.Limits`).
        fallback_domain: called when the model declares no data domain (e.g. derived from the
            ``--data`` file); without it such a model is an error.
        condition: ``--condition SPEC`` of a conditional library model (a data file of
            condition rows or ``constant:V1,V2,...``), see :mod:`innaudit.loading.adapters`.
        samples: ``--samples``: at most this many condition rows are read.
    """
    cond = resolve_condition(condition, samples) if condition else None
    if is_factory_spec(spec) and not Path(spec).is_file():
        return _from_factory(spec, weights, weights_key, fallback_domain, limits, cond)
    if weights:
        raise LoadError(
            "--weights goes with a factory MODEL (file.py:callable); a checkpoint file already holds its weights"
        )
    return _from_file(Path(spec), trust, fallback_domain, limits, cond)


def load_object(
    obj: Any,
    *,
    fallback_domain: Callable[[], DataDomain] | None = None,
    condition: str | None = None,
    samples: int | None = None,
) -> LoadedModel:
    """Wrap a model object already in memory: an InvertibleModel, an ``nn.Module`` with
    ``forward``/``inverse``, or any object an adapter recognises (FrEIA, nflows, normflows, zuko,
    pyro, torch.distributions)."""
    name = f"<python {type(obj).__module__}.{type(obj).__qualname__}>"
    if isinstance(obj, InvertibleModel):
        return LoadedModel(obj, {"model": obj.info.architecture or name, "loader": "python"})
    if not isinstance(obj, nn.Module) and find_adapter(obj) is None:
        raise LoadError(
            f"the model is a {type(obj).__name__}; expected a torch.nn.Module with forward "
            "and inverse, a flow from FrEIA, nflows, normflows, zuko or pyro, a checkpoint "
            "path, or a factory string (file.py:callable)"
        )
    cond = resolve_condition(condition, samples) if condition else None
    adapted = adapt_object(obj, _domain(obj, fallback_domain, name), {"object": name}, cond)
    return LoadedModel(adapted.model, _described({"model": name, "loader": "python"}, adapted, cond), adapted.warnings)


def _domain(module: Any, fallback: Callable[[], DataDomain] | None, what: str) -> DataDomain:
    domain = declared_domain(module)
    if domain is not None:
        return domain
    adapter = find_adapter(module)
    inferred = getattr(adapter, "declared_domain", None) if adapter is not None else None
    domain = inferred(module) if inferred is not None else None
    if domain is not None:  # a convention that fixes the input (ml-tarflow: img_size, [-1, 1])
        return domain
    if fallback is None:
        raise LoadError(
            f"{what} does not declare its input shape; pass --data FILE (its shape and "
            "range are used) or set input_shape / data_range on the module"
        )
    return fallback()


def _from_factory(
    spec: str,
    weights: str | None,
    weights_key: str | None,
    fallback: Callable[[], DataDomain] | None,
    limits: Limits | None = None,
    condition: Condition | None = None,
) -> LoadedModel:
    built, kind = resolve_factory(spec)
    if isinstance(built, InvertibleModel):
        return LoadedModel(built, {"model": spec, "loader": f"factory-{kind}"})
    if not isinstance(built, nn.Module) and find_adapter(built) is None:
        raise LoadError(
            f"factory {spec} returned {type(built).__name__}; expected a torch.nn.Module with forward and inverse"
        )
    target: dict[str, Any] = {"model": spec, "loader": f"factory-{kind}"}
    flags: list[str] = []
    stripped = None
    if weights:
        path = Path(weights)
        if not isinstance(built, nn.Module):
            raise LoadError(
                f"--weights: factory {spec} returned a {type(built).__name__}, which "
                "is not an nn.Module and holds no state dict"
            )
        digest, reading = load_state_dict_into(built, path, weights_key, limits)
        target.update(weights=str(path), weights_sha256=digest, weights_reading=reading)
        target["weights_key"] = reading["weights_key"]
        stripped = reading.get("stripped")
        flags = set_init_flags(built)
    source = {"factory": spec, "weights": weights or ""}
    adapted = adapt_object(built, _domain(built, fallback, spec), source, condition)
    notes = adapted.warnings
    if weights and stripped:
        notes = (f"stripped the training wrapper's key prefix {stripped!r} from --weights {path.name}", *notes)
    if weights and flags:
        notes = (
            f"set the data-dependent initialization flag(s) {', '.join(flags[:6])} after loading "
            f"--weights, so the loaded ActNorm statistics are audited instead of being replaced "
            "by the first batch",
            *notes,
        )
    return LoadedModel(adapted.model, _described(target, adapted, condition), notes)


def _from_file(
    path: Path,
    trust: bool,
    fallback: Callable[[], DataDomain] | None,
    limits: Limits | None = None,
    condition: Condition | None = None,
) -> LoadedModel:
    ckpt = read_checkpoint(path, limits)  # the one read: checks, load and sha256 see these bytes
    target: dict[str, Any] = {"model": str(path), "sha256": ckpt.sha256, "size": ckpt.size}
    try:
        obj = load_weights_only(ckpt, limits=limits)
    except UnsafeCheckpointError:
        if not trust:
            raise
        obj = load_trusted(ckpt)
        target.update(loader="trusted-pickle", trusted=True)
        warning = (
            f"{path} was loaded with --trust-checkpoint: it holds code, which ran while "
            "loading; audit only files you made yourself"
        )
        if not isinstance(obj, nn.Module) and find_adapter(obj) is None:
            _not_a_model(path, obj)
        adapted = adapt_object(obj, _domain(obj, fallback, str(path)), {"file": str(path)}, condition)
        return LoadedModel(adapted.model, _described(target, adapted, condition), (warning, *adapted.warnings))
    if is_native(obj):
        module, arch, domain, provenance = parse_native(obj, limits.max_bytes if limits else None)
        target.update(loader="native", architecture=arch, provenance=provenance)
        return LoadedModel(adapt_module(module, domain, {"file": str(path)}, arch), target)
    return _not_a_model(path, obj)


def _described(target: dict[str, Any], adapted: Adapted, condition: Condition | None) -> dict[str, Any]:
    """The report's target block, with the library that built the model and the condition."""
    library = adapted.model.info.source.get("library")
    if library:
        target["library"] = library
    if condition is not None:
        target["condition"] = condition.describe()
    return target


def _not_a_model(path: Path, obj: Any) -> NoReturn:
    if isinstance(obj, dict):
        raise LoadError(
            f"{path} holds weights but no architecture; give a factory: innaudit run file.py:build --weights {path}"
        )
    raise LoadError(
        f"{path} holds a {type(obj).__name__}; expected an innaudit checkpoint "
        "(innaudit.save_checkpoint) or a state dict with a factory"
    )
