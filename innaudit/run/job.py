"""One run, from a :class:`Job` to a :class:`~innaudit.core.results.Report`, by one path.

``execute(job)`` does, in this order: load the model (:mod:`innaudit.loading`), resolve the data
sets (:mod:`innaudit.data`), probe the model once on one sample (a shape or device mismatch fails
here, before any audit), make the report header, run the audits (:func:`innaudit.run.audits.run_audits`)
and assemble the report. The CLI (in process), the Python API (:func:`innaudit.audit`) and the
isolated child process (:mod:`innaudit.run.child`) all call it; none of them repeats a step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from innaudit.audits import REGISTRY
from innaudit.config.settings import Config
from innaudit.core.distributed import SINGLE, Shard
from innaudit.core.domain import DataDomain
from innaudit.core.errors import (
    ConfigError,
    DistributedError,
    InnauditError,
    LoadError,
    UsageError,
    clean_text,
    did_you_mean,
)
from innaudit.core.results import Report
from innaudit.data import (
    DEFAULT_OOD,
    Dataset,
    Role,
    array_dataset,
    conversion_warnings,
    default_data,
    inferred_array_domain,
    inferred_domain,
    natural_battery,
    resolve_dataset,
    split_name,
)
from innaudit.loading import LoadedModel, load_model, load_object
from innaudit.model.contract import InvertibleModel
from innaudit.model.integrity import changed, fingerprint, mutation_error
from innaudit.run.audits import Observer, Subject, applicable, run_audits, run_header
from innaudit.run.plan import PlanRun, plan_run
from innaudit.run.threads import kept
from innaudit.safeio.preflight import Limits

__all__ = ["Job", "Prepared", "execute", "plan", "prepare"]


@dataclass(frozen=True)
class Job:
    """Everything one run needs; picklable when ``model`` is a MODEL string and ``arrays`` is empty.

    Attributes:
        model: the MODEL argument (checkpoint path, ``file.py:callable``...) or a model object.
        config: the effective configuration; its ``data`` / ``ood`` SPECs may name ``arrays``.
        weights, weights_key, trust, condition: as ``innaudit run --weights`` and friends.
        max_memory: bytes a checkpoint may claim (``--max-memory``), None for the default.
        arrays: data sets given as tensors or arrays, by the name the config's SPECs use.
    """

    model: Any
    config: Config
    weights: str | None = None
    weights_key: str | None = None
    trust: bool = False
    max_memory: int | None = None
    condition: str | None = None
    arrays: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """A loaded model with its data, checked against each other, ready for ``run_audits``."""

    loaded: LoadedModel
    datasets: tuple[Dataset, ...]
    latent_shape: tuple[int, ...]


def device_of(name: str) -> torch.device:
    """``--device NAME`` as a torch device that exists here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name} is not supported; expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for, but this torch has no usable CUDA device; use --device cpu")
    return device


def _resolve(text: str, role: Role, job: Job, domain: DataDomain) -> Dataset:
    """One ``[NAME=]SPEC``: a set given in memory by that name, else a file or built-in."""
    config = job.config
    if text in job.arrays:
        return array_dataset(text, job.arrays[text], role, domain, config.samples)
    return resolve_dataset(text, role, domain, config.samples, config.seed)


def _datasets(model: InvertibleModel, job: Job) -> tuple[Dataset, ...]:
    config, domain = job.config, model.info.domain
    data = config.data or default_data(domain)
    sets = [_resolve(data, Role.IN_DISTRIBUTION, job, domain)] if data else []
    taken = {d.name for d in sets}
    # the default battery leaves out a noise set already given as the in-distribution set; an
    # image model on natural images also gets the shipped natural-image sets
    battery = [s for s in (*DEFAULT_OOD, *natural_battery(domain)[0]) if s not in taken] if config.default_ood else []
    for spec in config.ood or battery:
        sets.append(_resolve(spec, Role.OOD, job, domain))
    names = [d.name for d in sets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"data set name(s) {', '.join(duplicates)} given twice; name them apart with NAME=SPEC")
    return tuple(sets)


def _data_warnings(job: Job, domain: DataDomain, datasets: Sequence[Dataset]) -> tuple[str, ...]:
    """What the report must say about the data: converted sets, natural sets left out."""
    left_out = natural_battery(domain)[1] if job.config.default_ood and not job.config.ood else None
    return (*conversion_warnings(datasets), *([left_out] if left_out else []))


def _check_set_names(config: Config, datasets: Sequence[Dataset]) -> None:
    """Every ``audits.ID.sets.NAME`` of the config names a set that audit measures in this run;
    a typo would otherwise leave the override silently unused."""
    for aid, settings in config.settings.items():
        if aid not in REGISTRY or not settings.sets:
            continue
        known = REGISTRY[aid].set_names(datasets, settings.options)
        for name in settings.sets:
            if name not in known:
                raise ConfigError(
                    f"config audits.{aid}.sets: {clean_text(name, 80)!r} is not a set {aid} "
                    f"measures in this run{did_you_mean(name, known)}"
                )


def _probe(model: InvertibleModel, datasets: Sequence[Dataset], device: torch.device) -> tuple[int, ...]:
    """Run the model once on one sample so a shape or device mismatch fails before any audit."""
    domain = model.info.domain
    x = datasets[0].first(1) if datasets else torch.full((1, *domain.shape), 0.5 * (domain.low + domain.high))
    try:
        z = model.forward(x.to(device=device, dtype=model.dtype))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # also SystemExit, GeneratorExit, a model's own BaseException
        raise LoadError(
            f"the model's forward pass fails on one input of shape {tuple(x.shape[1:])}: "
            f"{clean_text(f'{type(exc).__name__}: {exc}', 300)}; check the model's input "
            "shape and the data"
        ) from None
    return tuple(int(s) for s in z.shape[1:])


def _fallback_domain(job: Job, notes: list[str]) -> Callable[[], DataDomain] | None:
    """How to learn the input shape of a model that declares none: from the in-distribution
    data (its range snapped to a standard one, its levels inferred); ``notes`` gets how."""
    data = job.config.data
    if data is None:
        return None

    def infer() -> DataDomain:
        if data in job.arrays:
            domain, note = inferred_array_domain(job.arrays[data], data)
        else:
            domain, note = inferred_domain(data)
        notes.append(note)
        return domain

    return infer


def _load(job: Job) -> LoadedModel:
    notes: list[str] = []
    fallback = _fallback_domain(job, notes)
    if not isinstance(job.model, str):
        loaded = load_object(job.model, fallback_domain=fallback, condition=job.condition, samples=job.config.samples)
    else:
        limits = Limits(max_bytes=job.max_memory) if job.max_memory else None
        loaded = load_model(
            job.model,
            weights=job.weights,
            weights_key=job.weights_key,
            trust=job.trust,
            fallback_domain=fallback,
            limits=limits,
            condition=job.condition,
            samples=job.config.samples,
        )
    return _with_domain(loaded, job.config, notes)


def _with_domain(loaded: LoadedModel, config: Config, notes: list[str]) -> LoadedModel:
    """``--range`` / ``--levels`` over the model's domain, and where the domain came from."""
    model, domain = loaded.model, loaded.model.info.domain
    if config.range is not None or config.levels is not None:
        low, high = config.range or (domain.low, domain.high)
        domain = replace(
            domain,
            low=low,
            high=high,
            levels=config.levels if config.levels is not None else domain.levels,
            assumed_range=domain.assumed_range and config.range is None,
        )
        notes = [*notes, "range/levels set by --range/--levels (or the config)"]
    if not notes:
        return loaded
    source = {**model.info.source, "domain": "; ".join(notes)}
    return replace(loaded, model=model.with_info(domain=domain, source=source))


def _probe_unchanged(
    loaded: LoadedModel, datasets: Sequence[Dataset], device: torch.device, config: Config
) -> tuple[LoadedModel, tuple[int, ...]]:
    """The probe is the model's first forward pass: a model that rewrites its parameters there
    (data-dependent ActNorm initialization) would be audited as another model, so it is an error
    unless ``allow_mutation``, then a warning."""
    before = fingerprint(loaded.model.module)
    latent_shape = _probe(loaded.model, datasets, device)
    names = changed(before, fingerprint(loaded.model.module))
    if names:
        problem = mutation_error(names, "in its first forward pass (the shape probe)")
        if not config.allow_mutation:
            raise LoadError(problem)
        loaded = replace(loaded, warnings=(*loaded.warnings, problem + " (allowed by --allow-mutation)"))
    return loaded, latent_shape


def prepare(job: Job) -> Prepared:
    """Load the model and the data sets and check them against each other."""
    device = device_of(job.config.device)
    loaded = _load(job)
    loaded.model.to(device)
    datasets = _datasets(loaded.model, job)
    _check_set_names(job.config, datasets)
    loaded, latent_shape = _probe_unchanged(loaded, datasets, device, job.config)
    return Prepared(loaded, datasets, latent_shape)


def plan(job: Job) -> PlanRun:
    """Load and prepare as :func:`execute` does, measure the model's calls, and return the plan
    (``innaudit run --plan``) without running any audit."""
    prepared = prepare(job)
    model, datasets = prepared.loaded.model, prepared.datasets
    with kept():
        return plan_run(
            model, datasets, job.config, applicable(Subject(model, datasets, job.config, prepared.latent_shape))
        )


def execute(job: Job, observer: Observer | None = None, shard: Shard = SINGLE) -> Report:
    """Run ``job`` to its Report: load, prepare the data, probe, header, audits, report.

    ``observer.run_started(header)`` is called once the header is known (the isolated child
    sends it to the parent, which can then build a partial report if the run is stopped).

    In a ``torchrun`` job (``shard`` of more than one rank) every rank loads the model on its
    own device (``cuda`` becomes ``cuda:LOCAL_RANK``) and prepares the data; the ranks then
    compare notes, so a rank that failed there ends every rank with the same error naming it.
    """
    if not shard.single and job.config.device == "cuda":
        job = replace(job, config=replace(job.config, device=f"cuda:{shard.local_rank}"))
    prepared = _prepared_everywhere(job, shard)
    loaded = prepared.loaded
    subject = Subject(loaded.model, prepared.datasets, job.config, prepared.latent_shape)
    header = run_header(
        subject,
        loaded.target,
        (*loaded.warnings, *_data_warnings(job, loaded.model.info.domain, prepared.datasets)),
        shard.world_size,
    )
    if observer is not None:
        observer.run_started(header)
    return run_audits(subject, observer=observer, header=header, shard=shard)


def _prepared_everywhere(job: Job, shard: Shard) -> Prepared:
    """``prepare(job)`` on this rank, and a check that every rank prepared: the same error on
    every rank is raised as it is; errors on some ranks only raise a DistributedError naming them."""
    if shard.single:
        return prepare(job)
    prepared: Prepared | None = None
    failure: tuple[str, str] | None = None
    try:
        prepared = prepare(job)
    except KeyboardInterrupt:
        raise
    except InnauditError as exc:
        failure = (type(exc).__name__, str(exc))
    except BaseException as exc:  # reported by every rank, never a hang at the first collective
        failure = (type(exc).__name__, clean_text(f"{type(exc).__name__}: {exc}", 300))
    notes = shard.statuses(failure, "prepared")
    failed = [(rank, note) for rank, note in enumerate(notes) if note is not None]
    if failed and len(failed) == len(notes) and len({n for _, n in failed}) == 1:
        raise LoadError(failed[0][1][1])  # every rank failed alike: the user's input, not a rank
    if failed:
        raise DistributedError(
            "; ".join(
                f"rank {rank} of {shard.world_size} failed before the audits: {text}" for rank, (_, text) in failed
            )
        )
    assert prepared is not None
    return prepared


def named_sets(value: Any, default_name: str) -> tuple[list[str], dict[str, Any]]:
    """User data (a SPEC, a tensor/array, a list of those, or a name -> any mapping) as SPECs
    for the config plus the in-memory arrays they name."""
    if value is None:
        return [], {}
    if isinstance(value, str):
        return [value], {}
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [(None, v) for v in value]
    else:
        items = [(None, value)]
    specs: list[str] = []
    arrays: dict[str, Any] = {}
    for index, (name, item) in enumerate(items):
        label = str(name) if name is not None else (default_name if len(items) == 1 else f"{default_name}{index}")
        if isinstance(item, str):
            given, spec = split_name(item)
            specs.append(item if name is None or given else f"{label}={spec}")
        else:
            specs.append(label)
            arrays[label] = item
    return specs, arrays
