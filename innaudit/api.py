"""The library entry point: from a MODEL argument and data SPECs to a Report.

The CLI is a thin layer over :func:`prepare` and :func:`audit`; Python users call ``audit``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .audits import specs
from .config import Config, parse_config
from .data import DEFAULT_OOD, Dataset, Role, default_data, inferred_domain, resolve_dataset
from .domain import DataDomain
from .errors import LoadError, UsageError, clean_text
from .integrity import changed, fingerprint, mutation_error
from .loading import LoadedModel, load_model
from .loading.preflight import Limits
from .model import InvertibleModel
from .results import Report
from .runner import Observer, run_audits

__all__ = ["Prepared", "audit", "prepare"]


@dataclass(frozen=True)
class Prepared:
    """A loaded model with its data, checked against each other, ready for ``run_audits``."""

    loaded: LoadedModel
    datasets: tuple[Dataset, ...]
    latent_shape: tuple[int, ...]
    config: Config


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for, but this torch has no usable CUDA device; "
                         "use --device cpu")
    return device


def _datasets(model: InvertibleModel, config: Config) -> tuple[Dataset, ...]:
    domain = model.info.domain
    data = config.data or default_data(domain)
    sets = [resolve_dataset(data, Role.IN_DISTRIBUTION, domain, config.samples, config.seed)] if data else []
    taken = {d.name for d in sets}
    # the default battery leaves out a noise set already given as the in-distribution set
    for spec in config.ood or [s for s in DEFAULT_OOD if s not in taken]:
        sets.append(resolve_dataset(spec, Role.OOD, domain, config.samples, config.seed))
    names = [d.name for d in sets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"data set name(s) {', '.join(duplicates)} given twice; name them apart with NAME=SPEC")
    return tuple(sets)


def _probe(model: InvertibleModel, datasets: Sequence[Dataset], device: torch.device) -> tuple[int, ...]:
    """Run the model once on one sample so a shape or device mismatch fails before any audit."""
    domain = model.info.domain
    x = datasets[0].first(1) if datasets else torch.full((1, *domain.shape), 0.5 * (domain.low + domain.high))
    try:
        z = model.forward(x.to(device=device, dtype=model.dtype))
    except Exception as exc:
        raise LoadError(f"the model's forward pass fails on one input of shape {tuple(x.shape[1:])}: "
                        f"{clean_text(f'{type(exc).__name__}: {exc}', 300)}; check the model's input "
                        "shape and the data") from None
    return tuple(int(s) for s in z.shape[1:])


def prepare(model: str | InvertibleModel, config: Config, *, weights: str | None = None,
            weights_key: str | None = None, trust: bool = False,
            limits: Limits | None = None, condition: str | None = None) -> Prepared:
    """Load the model and the data sets and check them against each other.

    ``limits`` bounds what a checkpoint file may claim (see :mod:`innaudit.loading.preflight`);
    ``condition`` is the ``--condition SPEC`` of a conditional model.
    """
    device = _device(config.device)
    notes: list[str] = []
    if isinstance(model, InvertibleModel):
        loaded = LoadedModel(model, {"model": model.info.architecture or "python object", "loader": "python"})
    else:
        def fallback() -> DataDomain:
            domain, note = inferred_domain(str(config.data))
            notes.append(note)
            return domain

        loaded = load_model(model, weights=weights, weights_key=weights_key, trust=trust,
                            fallback_domain=fallback if config.data else None, limits=limits,
                            condition=condition)
    loaded = _with_domain(loaded, config, notes)
    loaded.model.to(device)
    datasets = _datasets(loaded.model, config)
    before = fingerprint(loaded.model.module)
    latent_shape = _probe(loaded.model, datasets, device)
    names = changed(before, fingerprint(loaded.model.module))
    if names:
        problem = mutation_error(names, "in its first forward pass (the shape probe)")
        if not config.allow_mutation:
            raise LoadError(problem)
        loaded = replace(loaded, warnings=(*loaded.warnings, problem + " (allowed by --allow-mutation)"))
    return Prepared(loaded, datasets, latent_shape, config)


def _with_domain(loaded: LoadedModel, config: Config, notes: list[str]) -> LoadedModel:
    """``--range`` / ``--levels`` over the model's domain, and where the domain came from."""
    model, domain = loaded.model, loaded.model.info.domain
    if config.range is not None or config.levels is not None:
        low, high = config.range or (domain.low, domain.high)
        domain = replace(domain, low=low, high=high,
                         levels=config.levels if config.levels is not None else domain.levels)
        notes = [*notes, "range/levels set by --range/--levels (or the config)"]
    if not notes:
        return loaded
    source = {**model.info.source, "domain": "; ".join(notes)}
    return replace(loaded, model=model.with_info(domain=domain, source=source))


def audit(model: str | InvertibleModel, *, data: str | None = None, ood: Sequence[str] = (),
          config: Config | Mapping[str, Any] | None = None, observer: Observer | None = None,
          **load_options: Any) -> Report:
    """Audit a model and return the Report.

    Args:
        model: a MODEL argument (checkpoint path, ``file.py:callable``...) or an InvertibleModel.
        data: the in-distribution SPEC (default: the model's own test set, when it names one).
        ood: held-out ``[NAME=]SPEC`` (default: the paper's noise battery).
        config: a Config, or a mapping in the YAML layout of :mod:`innaudit.config`.
        observer: progress receiver.
        **load_options: ``weights``, ``weights_key``, ``trust`` as in :func:`innaudit.load_model`.

    Example:
        >>> report = innaudit.audit("checkpoints/digits-additive.pt")  # doctest: +SKIP
        >>> report.exit_code
        <ExitCode.OK: 0>
    """
    cfg = config if isinstance(config, Config) else parse_config(config, specs())
    if data is not None or ood:
        cfg = replace(cfg, data=data if data is not None else cfg.data, ood=tuple(ood) or cfg.ood)
    prepared = prepare(model, cfg, **load_options)
    return run_audits(prepared.loaded.model, prepared.datasets, cfg, latent_shape=prepared.latent_shape,
                      observer=observer, target=prepared.loaded.target, warnings=prepared.loaded.warnings)
