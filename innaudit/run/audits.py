"""``run_audits``: one audit at a time, seeded, timed, with errors caught as ERROR results."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from innaudit._version import __version__
from innaudit.audits import REGISTRY, Audit, AuditContext, selected_audits
from innaudit.audits.passes import SharedPasses, limit_from_environment, reader_rows
from innaudit.config.settings import AuditSettings, Config
from innaudit.core.distributed import SINGLE, RankFailure, Shard
from innaudit.core.errors import DistributedError, UsageError, clean_text
from innaudit.core.intervals import rate_intervals
from innaudit.core.records import RunRecord, TargetRecord
from innaudit.core.results import AuditResult, Report, SetResult, Status, worst
from innaudit.core.seeding import stable_seed
from innaudit.data import Dataset
from innaudit.linalg import NotMeasuredError
from innaudit.model.contract import InvertibleModel, LogDetShapeError
from innaudit.model.integrity import changed, fingerprint, mutation_error
from innaudit.run.plan import plan_run
from innaudit.run.threads import kept
from innaudit.verdict.gate import apply_waivers, judge

__all__ = [
    "Observer",
    "RunHeader",
    "Subject",
    "applicable",
    "assemble",
    "environment",
    "run_audits",
    "run_header",
    "versions",
]


class Observer(Protocol):
    """Receives progress; the CLI draws bars with it, library users may pass nothing."""

    def run_started(self, header: RunHeader) -> None:
        """The model and data are loaded and checked; the audits are about to start."""

    def audit_started(self, audit_id: str, title: str) -> None:
        """An audit begins."""

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        """``done`` of ``total`` samples of ``dataset`` are processed."""

    def audit_finished(self, result: AuditResult) -> None:
        """An audit ended (with any status)."""


class _Silent:
    def run_started(self, header: RunHeader) -> None:
        pass

    def audit_started(self, audit_id: str, title: str) -> None:
        pass

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        pass

    def audit_finished(self, result: AuditResult) -> None:
        pass


def versions() -> dict[str, str]:
    """The versions of innaudit, torch, numpy and Python, for the report's ``run`` block."""
    return {
        "innaudit": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def environment(model: InvertibleModel, device: torch.device) -> dict[str, Any]:
    """The numeric environment that can change results, for the report's ``run`` block."""
    return {
        "device": str(device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "versions": versions(),
        "platform": sys.platform,
        "threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def _run_one(audit: Audit, ctx: AuditContext) -> AuditResult:
    """Everything an audit does, ``skip_reason`` included, inside one error boundary.

    Any exception, and any ``BaseException`` but ``KeyboardInterrupt`` (a library calling
    ``sys.exit(0)`` inside a model must not end the run as a pass), gives ERROR for this audit
    with its message; the other audits still run and the report is still written. A
    :class:`~innaudit.core.errors.DistributedError` (a rank of a ``torchrun`` job gone, hung or out
    of step) ends the whole run instead: no later collective could succeed.
    """
    start = time.perf_counter()
    declarations = {m.path: m for m in audit.metrics}
    try:
        reason = audit.skip_reason(ctx)
        if reason is not None:
            return AuditResult(audit.id, audit.title, Status.SKIP, reason, 0.0, ctx.seed)
        results = []
        for m in audit.run(ctx):
            status, checks = judge(m.metrics, ctx.settings.thresholds_for(m.dataset), declarations)
            results.append(
                SetResult(
                    m.dataset,
                    status,
                    m.metrics,
                    checks,
                    m.message,
                    m.series,
                    artifacts=m.artifacts,
                    intervals=rate_intervals(m.metrics, audit.metrics),
                )
            )
    except (KeyboardInterrupt, DistributedError):  # a broken job ends the run, not the audit
        raise
    except BaseException as exc:  # an audit that crashes gives ERROR, never a pass
        if isinstance(exc, RankFailure):  # a unit raised on one rank: every rank records it
            message, lead = clean_text(str(exc), 500), "the audit crashed"
        elif isinstance(exc, (NotMeasuredError, LogDetShapeError)):  # what can be measured, not a bug
            message, lead = clean_text(str(exc), 500), "the audit could not measure"
        else:
            message, lead = clean_text(f"{type(exc).__name__}: {exc}", 500), "the audit crashed"
        return AuditResult(
            audit.id,
            audit.title,
            Status.ERROR,
            f"{lead}: {message}",
            time.perf_counter() - start,
            ctx.seed,
            error=message,
        )
    status = worst(tuple(r.status for r in results))
    return AuditResult(
        audit.id, audit.title, status, _summary(results), time.perf_counter() - start, ctx.seed, tuple(results)
    )


def _settings(config: Config, audit: Audit) -> AuditSettings:
    """The audit's settings in ``config``; its defaults when the config was built by hand."""
    found = config.settings.get(audit.id)
    return found if found is not None else AuditSettings(dict(audit.thresholds), dict(audit.options))


def _summary(results: Sequence[SetResult]) -> str:
    bad = [r for r in results if r.status in (Status.FAIL, Status.WARN)]
    if not bad:
        return f"{len(results)} set(s) within thresholds"
    parts = [
        f"{r.dataset}: " + ", ".join(f"{c.metric}={c.value:.3g}" for c in r.checks if c.status is r.status) for r in bad
    ]
    return "; ".join(parts)


@dataclass(frozen=True)
class Subject:
    """What a run audits: the model (on ``config.device``), its data sets (in-distribution
    first, then the OOD sets), the effective config, and the shape of one ``z`` (from the
    preflight probe)."""

    model: InvertibleModel
    datasets: Sequence[Dataset]
    config: Config
    latent_shape: tuple[int, ...]


@dataclass(frozen=True)
class RunHeader:
    """What a report says about the run and the target, known before the first audit starts."""

    run: RunRecord
    target: TargetRecord
    warnings: tuple[str, ...]
    fail_on: Status
    started: float


def run_header(
    subject: Subject, target: Mapping[str, Any] | None = None, warnings: Sequence[str] = (), world_size: int = 1
) -> RunHeader:
    """The ``run`` and ``target`` blocks of the report (``run.world_size`` for a ``torchrun``
    job of more than one process)."""
    model, config, latent_shape = subject.model, subject.config, subject.latent_shape
    started = time.time()
    run = {
        "seed": config.seed,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        **environment(model, torch.device(config.device)),
        "datasets": [d.describe() for d in subject.datasets],
        "config": config.to_dict(),
    }
    if world_size > 1:
        run["world_size"] = world_size
    tgt = {**(target or {}), "info": model.info.to_dict(), "latent_shape": list(latent_shape)}
    if model.latent is not None and not model.latent.single:
        tgt["latent_levels"] = model.latent.describe()  # the flat latent_shape's levels, in order
    return RunHeader(RunRecord.of(run), TargetRecord.of(tgt), tuple(warnings), Status(config.fail_on), started)


def assemble(header: RunHeader, results: Sequence[AuditResult], errors: Sequence[str] = ()) -> Report:
    """The Report from a header and the audit results so far (a run stopped early gives errors)."""
    if not errors and not any(r.status is not Status.SKIP for r in results):
        errors = ("nothing was audited: every selected audit was skipped",)
    run = replace(header.run, duration_s=round(time.time() - header.started, 4))
    return Report(
        tool={"name": "innaudit", "version": __version__},
        run=run,
        target=header.target,
        audits=tuple(results),
        errors=tuple(errors),
        fail_on=header.fail_on,
        warnings=header.warnings,
    )


def _context(aid: str, subject: Subject, observer: Observer, batch_size: int, shard: Shard = SINGLE) -> AuditContext:
    def progress(name: str, done: int, total: int) -> None:
        observer.progress(aid, name, done, total)

    config = subject.config
    return AuditContext(
        model=subject.model,
        datasets=subject.datasets,
        settings=_settings(config, REGISTRY[aid]()),
        seed=stable_seed(config.seed, aid),
        samples=config.samples,
        batch_size=batch_size,
        device=torch.device(config.device),
        float64_check=config.float64_check,
        latent_shape=subject.latent_shape,
        progress=progress,
        shard=shard,
    )


def _shared_passes(subject: Subject) -> SharedPasses:
    """The run's shared passes (:mod:`innaudit.audits.passes`): the rows of the data sets the
    selected readers take, and the memory bound (``INNAUDIT_SHARED_PASSES_MIB``)."""
    config = subject.config
    chosen = [aid for aid in selected_audits(config) if aid not in config.skip]
    options = {aid: _settings(config, REGISTRY[aid]()).options for aid in chosen}
    return SharedPasses(reader_rows(options, config.samples), limit_from_environment())


def applicable(subject: Subject) -> Callable[[str], bool]:
    """``applies(audit_id)``: whether the audit would run (no skip reason) on this model and data."""
    batch = subject.config.batch_size if isinstance(subject.config.batch_size, int) else 1

    def applies(aid: str) -> bool:
        try:
            ctx = _context(aid, subject, _Silent(), batch)
            return REGISTRY[aid]().skip_reason(ctx) is None
        except KeyboardInterrupt:
            raise
        except BaseException:  # the audit itself reports the problem when it runs
            return True

    return applies


def run_audits(
    subject: Subject,
    *,
    observer: Observer | None = None,
    target: Mapping[str, Any] | None = None,
    header: RunHeader | None = None,
    shard: Shard = SINGLE,
) -> Report:
    """Run the selected audits on ``model`` and build the Report.

    Before the first audit the cost plan is made (:func:`innaudit.run.plan.plan_run`): methods
    chosen by cost, samples sized to ``config.budget`` when one is set; then the report's
    ``run.plan`` records it with the seconds each audit used (a budgeted run depends on the
    machine's speed; without a budget the report does not).

    Args:
        subject: the model, its data sets, the effective config and the shape of one ``z``.
        observer: progress receiver (``plan_ready(run)`` gets the live
            :class:`~innaudit.run.plan.PlanRun` when it has that method).
        target: what the report says about the model (path, sha256, loader...).
        header: a header already made by :func:`run_header` (else one is made here, with
            ``target``).
        shard: this process's share of a ``torchrun`` job. Rank 0's plan (batch size, methods,
            samples and options per audit) is handed to every rank so all shard the same work;
            the budget is the job's wall-clock, the plan's measured costs divided by the ranks.
            A :class:`~innaudit.core.errors.DistributedError` ends the run with the audits so far and
            the error (exit 2).
    """
    with kept():  # the run's thread choice never leaks to the caller
        return _run_audits(subject, observer, target, header, shard)


def _run_audits(
    subject: Subject,
    observer: Observer | None,
    target: Mapping[str, Any] | None,
    header: RunHeader | None,
    shard: Shard,
) -> Report:
    observer = observer or _Silent()
    model, datasets, config = subject.model, subject.datasets, subject.config
    header = header or run_header(subject, target)
    run = plan_run(model, datasets, config, applicable(subject), workers=shard.world_size)
    hook = getattr(observer, "plan_ready", None)
    if callable(hook):
        hook(run)
    results: list[AuditResult] = []
    before, problems = fingerprint(model.module), list[str]()
    broken: list[str] = []
    try:
        refusal = shard.first(run.over_budget(), "budget fit")  # rank 0's plan decides for every rank
        if refusal is not None:  # before any audit runs: one line, exit 2
            raise UsageError(refusal)
        batch = shard.first(run.plan.batch_size, "batch size")
        passes = _shared_passes(subject)
        for aid in selected_audits(config):
            audit = REGISTRY[aid]()
            if aid in config.skip:
                results.append(AuditResult(aid, audit.title, Status.SKIP, "left out by --skip", 0.0, 0))
                continue
            ctx = _agreed(
                run.context(aid, replace(_context(aid, subject, observer, batch, shard), passes=passes)),
                shard,
                aid,
            )
            observer.audit_started(aid, audit.title)
            result = _run_one(audit, ctx)
            shard.agree(f"{aid} done")
            run.finished(aid, result.duration_s)
            observer.audit_finished(result)
            results.append(result)
            if len(results) == 1:
                problems = _integrity(before, model, f"during the first audit ({aid})", problems)
    except DistributedError as exc:
        broken.append(str(exc))
    problems = _integrity(before, model, "during the audits", problems)
    errors, header = _mutations(problems, config, header)
    header = replace(
        header,
        run=replace(header.run, threads=run.threads.to_dict()),
        warnings=(*header.warnings, *run.cut_warnings()),
    )
    report = apply_waivers(assemble(header, results, [*broken, *errors]), config.waivers)
    if config.budget is None:  # the plan holds timings; without a budget the report stays reproducible
        return report
    return replace(report, run=replace(report.run, plan=run.report(), replans=tuple(run.replans)))


def _agreed(ctx: AuditContext, shard: Shard, aid: str) -> AuditContext:
    """``ctx`` with rank 0's planned samples, set sizes and options (plans are timed, so ranks
    could otherwise choose differently and shard different work)."""
    if shard.single:
        return ctx
    options, samples, sizes = shard.first(
        (dict(ctx.settings.options), ctx.samples, [d.size for d in ctx.datasets]), f"{aid} plan"
    )
    datasets = [replace(d, size=size) for d, size in zip(ctx.datasets, sizes, strict=True)]
    return replace(ctx, settings=replace(ctx.settings, options=options), samples=samples, datasets=datasets)


def _integrity(before: Mapping[str, str], model: InvertibleModel, when: str, found: list[str]) -> list[str]:
    """The first change of the model's parameters/buffers since ``before`` (kept once found)."""
    if found:
        return found
    names = changed(before, fingerprint(model.module))
    return [mutation_error(names, when)] if names else []


def _mutations(problems: list[str], config: Config, header: RunHeader) -> tuple[list[str], RunHeader]:
    """A model that changed is a report error, or a warning with ``allow_mutation``."""
    if problems and config.allow_mutation:
        return [], replace(
            header, warnings=(*header.warnings, *(p + " (allowed by --allow-mutation)" for p in problems))
        )
    return problems, header
