"""One repair, end to end: :func:`repair` (``innaudit.repair(...)`` and ``innaudit repair``).

audit (or read the given report) -> plan (:mod:`~innaudit.remedies.plan`) -> price of the original
-> structural remedies (bounded scale, float64 inverses) -> fine-tune under the monitor -> price
of the repair -> checkpoint bytes -> re-audit of what those bytes load to, with the same config
(seed, sets, audits, samples) -> comparison with the before-run -> the re-audit's verdict on each
remedy. Nothing is written unless ``output`` is given (then atomically, at the end).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from innaudit.audits import RUN_ORDER, specs
from innaudit.audits.base import metric_table
from innaudit.config.duration import parse_duration
from innaudit.config.settings import Config, configured, parse_config
from innaudit.core.domain import DataDomain
from innaudit.core.errors import UsageError, clean_text
from innaudit.core.records import TargetRecord
from innaudit.core.results import ExitCode, Report
from innaudit.core.seeding import stable_seed
from innaudit.data import DEFAULT_OOD
from innaudit.data.infer import infer_domain
from innaudit.remedies import fd, nf, precision
from innaudit.remedies.bounded_scale import (
    DEFAULT_MARGIN,
    FLOOR,
    SCALE_FLOOR,
    bound_scales,
    choose_clamps,
    floor_bound,
    measure_ranges,
)
from innaudit.remedies.checkpoint import native_bytes, state_dict_bytes
from innaudit.remedies.data import RepairData, prepare_data
from innaudit.remedies.fd import FDSettings
from innaudit.remedies.finetune import FineTuneResult, FineTuneSettings, Validation, dequantize, fine_tune
from innaudit.remedies.nf import NFSettings
from innaudit.remedies.objective import Objective, objective_of, validation_loss
from innaudit.remedies.plan import Plan, make_plan
from innaudit.remedies.price import Price, measure
from innaudit.remedies.result import Outcome, RemedyResult, RepairResult, RepairStatus, judge
from innaudit.remedies.rules import BOUNDED_SCALE, FD, NF, PRECISION
from innaudit.remedies.subject import NATIVE, Subject, load_subject, rebuilt
from innaudit.run.audits import Observer
from innaudit.run.job import Job, execute, prepare
from innaudit.verdict.baseline import compare
from innaudit.verdict.report_json import load_report

__all__ = ["AUDIT_SHARE", "repair"]

AUDIT_SHARE = 0.3
"""Share of ``--budget`` each of the two audits gets (the fine-tune takes the rest)."""


def _config(config: Config | Mapping[str, Any] | None, overrides: Mapping[str, Any], before: Report | None) -> Config:
    """The audits' config: the given report's (``before``), or the given config and options."""
    if before is not None:
        return config_of_report(before)
    return configured(config, specs(), overrides)


def config_of_report(report: Report) -> Config:
    """The Config a saved report ran with (``run.config``), so a re-audit repeats it exactly."""
    raw = dict(report.run.get("config") or {})
    settings = raw.pop("settings", {}) or {}
    for key in ("batch_size",):
        raw[key] = raw.get(key, "auto")
    layout: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("waivers",) and v is not None}
    layout["waivers"] = raw.get("waivers") or []
    for aid, section in settings.items():
        if aid not in specs():
            continue
        body: dict[str, Any] = dict(section.get("options") or {})
        body["thresholds"] = section.get("thresholds") or {}
        sets = section.get("sets") or {}
        if sets:
            body["sets"] = {name: {"thresholds": th} for name, th in sets.items()}
        layout[aid] = body
    return parse_config(layout, specs())


def _budget(value: str | float | None) -> float | None:
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is None or seconds <= 0:
        raise UsageError(f"budget {value!r}; expected a positive duration such as 10m")
    return seconds


def _fallback(data: Any) -> Any:
    """The input domain of a model that declares none, from the training data."""
    if data is None:
        return None

    def infer() -> DataDomain:
        if isinstance(data, str):
            from innaudit.data import inferred_domain

            return inferred_domain(data)[0]
        tensor = torch.as_tensor(data)
        found = infer_domain(tensor.double().numpy(), "training data")
        return DataDomain(
            shape=tuple(int(s) for s in tensor.shape[1:]), low=found.low, high=found.high, levels=found.levels
        )

    return infer


def _audit(subject: Subject, config: Config, arrays: Mapping[str, Any], observer: Observer | None) -> Report:
    """Audit the subject's model as loaded (its target block and load warnings kept)."""
    report = execute(Job(subject.model, config, arrays=dict(arrays)), observer)
    return replace(
        report,
        target=TargetRecord.of({**report.target, **subject.loaded.target}),
        warnings=(*subject.loaded.warnings, *report.warnings),
    )


def _before(subject: Subject, given: Report | str | os.PathLike[str] | None) -> tuple[Report | None, str | None]:
    """A saved before-report, checked to be of this model (None when the repair audits)."""
    if given is None:
        return None, None
    report = given if isinstance(given, Report) else load_report(os.fspath(given), "before report")
    want = subject.loaded.target.get("sha256") or subject.loaded.target.get("weights_sha256")
    have = report.target.get("sha256") or report.target.get("weights_sha256")
    if want and have and want != have:
        raise UsageError(
            f"the before report audits a model with sha256 {clean_text(have, 64)[:12]}, not {subject.name} "
            f"({want[:12]}); audit this model or give its own report"
        )
    return report, None if isinstance(given, Report) else os.fspath(given)


def _failing_samples(config: Config, subject: Subject, data: RepairData, plan: Plan) -> torch.Tensor:
    """Samples of the sets the precision evidence names (at most 256 each)."""
    names = {e.dataset for c in plan.choices if c.remedy == PRECISION for e in c.finding.evidence}
    prepared = prepare(Job(subject.model, config, arrays=dict(data.arrays)))
    chosen = [d.first(256) for d in prepared.datasets if d.name in names]
    return torch.cat(chosen) if chosen else data.heldout[:256]


def _price(subject: Subject, objective: Objective, data: RepairData, seed: int) -> tuple[str, float]:
    return measure(subject.model, objective, data.heldout, data.heldout_labels, seed)


def _apply_structure(
    subject: Subject, plan: Plan, data: RepairData, config: Config, margin: float, seed: int
) -> tuple[dict[str, float], list[str], list[RemedyResult], list[str]]:
    """Bounded scale and float64 inverses, in place; returns the clamps, the wrapped blocks, the
    remedy records and notes."""
    clamps: dict[str, float] = {}
    blocks: list[str] = []
    records: list[RemedyResult] = []
    notes: list[str] = []
    if BOUNDED_SCALE in plan.chosen:
        generator = torch.Generator().manual_seed(stable_seed(seed, "repair", "ranges"))
        train = dequantize(data.train, subject.model.info.domain, generator)
        ranges = measure_ranges(subject.model, list(plan.targets), train)
        caps = {t.path: floor_bound(t.scale) for t in plan.targets} if plan.floored else None
        clamps = choose_clamps(ranges, margin, caps)
        bound_scales(subject.model.module, clamps)
        records.append(_bounded_record(clamps, ranges, margin, data.train_name, caps))
    if PRECISION in plan.chosen:
        samples = _failing_samples(config, subject, data, plan)
        blocks = precision.failing_blocks(subject.model, samples)
        z = subject.model.forward(samples[:64].to(subject.model.dtype))
        before_s = precision.inverse_seconds(subject.model, z)
        precision.wrap_blocks(subject.model.module, blocks)
        after_s = precision.inverse_seconds(subject.model, z)
        records.append(
            RemedyResult(
                PRECISION,
                precision.CHANGES.format(blocks=", ".join(blocks) or "no block (none fails alone)"),
                {"blocks": blocks, "inverse_time_ratio": after_s / before_s if before_s > 0 else None},
            )
        )
        if not blocks:
            notes.append("precision: no single block's inverse fails in float32 where float64 holds")
    return clamps, blocks, records, notes


def _bounded_record(
    clamps: Mapping[str, float],
    ranges: Mapping[str, float],
    margin: float,
    train_name: str,
    caps: Mapping[str, float] | None,
) -> RemedyResult:
    """What the bounded scale changed: ``c`` per coupling, and, when floored, which bounds the
    floor lowered below ``margin x max |h|``."""
    span = f"c from {min(clamps.values()):.3g} to {max(clamps.values()):.3g}"
    changes = f"h -> c tanh(h / c) in {len(clamps)} affine coupling(s), c = {margin:g} x max |h| on {train_name}"
    parameters: dict[str, Any] = {"margin": margin, "range": dict(ranges), "clamp": dict(clamps)}
    if caps is None:
        return RemedyResult(BOUNDED_SCALE, f"{changes} ({span})", parameters)
    lowered = sorted(p for p in clamps if caps.get(p, math.inf) < margin * max(ranges[p], FLOOR))
    changes += (
        f", at most the bound that keeps g >= {SCALE_FLOOR:g} ({span}; the floor lowered {len(lowered)} of them: "
        "the scale had collapsed there on the data)"
    )
    return RemedyResult(BOUNDED_SCALE, changes, {**parameters, "floor": SCALE_FLOOR, "floored": lowered})


def _valid_value(subject: Subject, objective: Objective, data: RepairData, seed: int) -> float:
    """The objective on the validation split (one fixed dequantization draw); NaN without one."""
    if objective.kind is None or (objective.supervised and data.valid_labels is None):
        return math.nan
    generator = torch.Generator().manual_seed(stable_seed(seed, "repair", "validation"))
    x = dequantize(data.valid, subject.model.info.domain, generator).to(subject.model.dtype)
    return validation_loss(subject.model, objective, x, data.valid_labels)


def _staged(
    subject: Subject,
    objective: Objective,
    data: RepairData,
    cfg: Config,
    plan: Plan,
    settings: FineTuneSettings,
    structural: bool,
    observer: Observer | None,
) -> tuple[FineTuneSettings, list[RemedyResult], list[str]]:
    """After a structural remedy, re-run only the audits the FD/NF evidence came from: when those
    checks pass already, the regularized fine-tune (and its price) is not needed and is left out."""
    if not structural or (settings.fd is None and settings.nf is None):
        return settings, [], []
    evidence = tuple(e for c in plan.choices if c.remedy in (FD, NF) and c.chosen for e in c.finding.evidence)
    ids = tuple(a for a in RUN_ORDER if any(e.audit == a for e in evidence))
    interim = execute(Job(subject.model, replace(cfg, audits=ids, skip=()), arrays=dict(data.arrays)), observer)
    outcome, now = judge(interim, evidence)
    if outcome is not Outcome.FIXED:
        return (
            settings,
            [],
            [f"after the structural remedies {', '.join(ids)} still fail(s): fine-tuning with the regularizers"],
        )
    text = "; ".join(e.text for e in now[:3])
    skipped = [
        RemedyResult(r, f"not applied: after the structural remedies its checks pass ({text})", {"applied": False})
        for r in (FD, NF)
        if (settings.fd if r == FD else settings.nf) is not None
    ]
    return replace(settings, fd=None, nf=None), skipped, []


def _settings(plan: Plan, steps: int, lr: float, batch_size: int, every: int) -> FineTuneSettings:
    return FineTuneSettings(
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        every=every,
        fd=FDSettings() if FD in plan.chosen else None,
        nf=NFSettings() if NF in plan.chosen else None,
    )


def _fine_tune_records(settings: FineTuneSettings) -> list[RemedyResult]:
    records = []
    if settings.fd is not None:
        changes = fd.CHANGES.format(eps=settings.fd.eps, coeff=settings.fd.coeff, every=settings.every)
        records.append(RemedyResult(FD, changes, {**settings.to_dict()["fd"], "every": settings.every}))
    if settings.nf is not None:
        records.append(RemedyResult(NF, nf.CHANGES.format(coeff=settings.nf.coeff), settings.to_dict()["nf"]))
    return records


def _monitored_fine_tune(
    subject: Subject,
    objective: Objective,
    data: RepairData,
    settings: FineTuneSettings,
    seed: int,
    every: int,
    ood: Sequence[str],
    deadline: float | None,
) -> tuple[FineTuneResult, dict[str, Any]]:
    """The fine-tune under :class:`innaudit.monitor.InvertibilityMonitor` (warnings kept quiet:
    the re-audit, not the monitor, decides); returns its result and the monitor's timeline."""
    from innaudit.monitor import InvertibilityMonitor, MonitorWarning

    monitor = InvertibilityMonitor(
        subject.model, data=data.heldout[:64], ood=list(ood), every=every, on_fail="warn", seed=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MonitorWarning)
        first = 0 if settings.fd is None and settings.nf is None else 1
        validation = Validation(data.valid, data.valid_labels, every, first)
        result = fine_tune(
            subject.model, objective, data.train, data.train_labels, settings, seed, monitor.step, deadline, validation
        )
    return result, monitor.summary()


def _provenance(
    subject: Subject,
    plan: Plan,
    records: Sequence[RemedyResult],
    tuned: Mapping[str, Any] | None,
    price: Price,
    seed: int,
) -> dict[str, Any]:
    """The repaired checkpoint's provenance: remedies, parameters, source sha256 (no wall time)."""
    source = subject.native
    return {
        "repair": {
            "source": {
                "model": subject.name,
                "sha256": source.sha256 if source else None,
                "provenance": dict(source.provenance) if source else {},
            },
            "seed": int(seed),
            "plan": list(plan.chosen),
            "remedies": [{"remedy": r.remedy, "changes": r.changes, "parameters": dict(r.parameters)} for r in records],
            "fine_tune": dict(tuned) if tuned is not None else None,
            "price": price.to_dict(),
        },
        "torch": str(torch.__version__),
    }


def repair(
    model: Any,
    *,
    data: Any,
    ood: Sequence[str] | None = None,
    test: Any = None,
    labels: Any = None,
    test_labels: Any = None,
    audits: Sequence[str] | None = None,
    skip: Sequence[str] | None = None,
    samples: int | None = None,
    seed: int = 0,
    config: Config | Mapping[str, Any] | None = None,
    before: Report | str | os.PathLike[str] | None = None,
    weights: str | None = None,
    weights_key: str | None = None,
    trust: bool = False,
    steps: int = 300,
    lr: float = 1e-3,
    batch_size: int = 128,
    every: int = 10,
    margin: float = DEFAULT_MARGIN,
    monitor_every: int | None = None,
    budget: str | float | None = None,
    output: str | os.PathLike[str] | None = None,
    plan_only: bool = False,
    observer: Observer | None = None,
) -> RepairResult:
    """Repair ``model``: audit, choose remedies, apply, fine-tune, re-audit, compare, price.

    Args:
        model: a native checkpoint path, a factory (``file.py:callable``, with ``weights``), or
            a model object.
        data: the training data (a SPEC such as ``digits:train``, a file, a tensor or array).
        ood: held-out sets for the audits (default: the paper's noise battery).
        test: the held-out split for the price and the audits' data (default: the model's own
            test split, else 20 % of ``data``, which the fine-tune then never sees).
        labels, test_labels: class labels for a supervised INN (arrays or files).
        audits, skip, samples, seed, config: as :func:`innaudit.audit`; the re-audit repeats them.
        before: a saved report of this model to start from instead of auditing it.
        weights, weights_key, trust: as ``innaudit run`` (``trust`` is refused: see the CLI).
        steps, lr, batch_size, every: the fine-tune (Adam); the regularizers act every ``every``
            steps (the paper's 10).
        margin: the bounded scale's ``c = margin * max |h|`` on the training data.
        monitor_every: monitor checks during the fine-tune (default: 5 checks per run).
        budget: bounds the whole repair (``"10m"``): each audit gets 30 %, the fine-tune stops
            when the rest is spent (a budgeted repair depends on the machine's speed).
        output: where to write the repaired checkpoint (atomically); None writes nothing.
        plan_only: stop after the plan (``--plan``).
        observer: progress of the audits.
    """
    start = time.monotonic()
    total = _budget(budget)
    subject = load_subject(model, weights, weights_key, trust, _fallback(data))
    objective = objective_of(subject.model)
    repair_data = prepare_data(subject.model.info.domain, data, test, labels, test_labels, seed)
    if objective.supervised and repair_data.train_labels is None:
        raise UsageError(
            f"{subject.name} is a classifier: fine-tuning it needs the labels of the training data; pass --labels FILE"
        )
    saved, _ = _before(subject, before)
    if saved is not None and any(v is not None for v in (audits, skip, samples, ood)):
        raise UsageError(
            "--before fixes the audits, sets and samples of both runs; leave out --audit, --skip, --samples and --ood"
        )
    overrides = {
        "data": repair_data.audit_data,
        "ood": list(ood) if ood else None,
        "audits": list(audits) if audits else None,
        "skip": list(skip) if skip else None,
        "samples": samples,
        "seed": seed,
        "budget": AUDIT_SHARE * total if total is not None else None,
    }
    cfg = _config(config, overrides, saved)
    before_report = saved if saved is not None else _audit(subject, cfg, repair_data.arrays, observer)
    if before_report.exit_code is ExitCode.NO_VERDICT:
        raise UsageError(
            f"the audit of {subject.name} gave no trustworthy verdict ({'; '.join(before_report.errors) or 'an audit errored'}); "
            "fix that first (innaudit run shows it)"
        )
    plan = make_plan(before_report, subject.model, objective, subject.kind == NATIVE)
    if plan_only or plan.passed or not plan.chosen:
        status = (
            RepairStatus.PLANNED
            if plan_only
            else RepairStatus.NOTHING_TO_REPAIR
            if plan.passed
            else RepairStatus.NO_REMEDY
        )
        return RepairResult(status, plan, before_report, wall_s=time.monotonic() - start)
    settings = _settings(plan, steps, lr, batch_size, every)
    tuning = Tuning(settings, margin, monitor_every, seed, start, total)
    out = os.fspath(output) if output is not None else None
    return _carry_out(subject, objective, repair_data, cfg, plan, before_report, tuning, out, observer)


@dataclass(frozen=True)
class Tuning:
    """How the plan is carried out: the fine-tune, the bound margin, the monitor, the clock."""

    settings: FineTuneSettings
    margin: float
    monitor_every: int | None
    seed: int
    start: float
    budget_s: float | None

    @property
    def deadline(self) -> float | None:
        """When the fine-tune must stop to leave the re-audit its share of the budget."""
        return None if self.budget_s is None else self.start + self.budget_s * (1 - AUDIT_SHARE)


def _carry_out(
    subject: Subject,
    objective: Objective,
    data: RepairData,
    cfg: Config,
    plan: Plan,
    before_report: Report,
    tuning: Tuning,
    output: str | None,
    observer: Observer | None,
) -> RepairResult:
    """Apply the plan, fine-tune, make the bytes, re-audit, compare, judge, write."""
    seed = tuning.seed
    metric, before_value = _price(subject, objective, data, seed)
    valid_before = _valid_value(subject, objective, data, seed)
    clamps, blocks, records, notes = _apply_structure(subject, plan, data, cfg, tuning.margin, seed)
    after_structure = _price(subject, objective, data, seed)[1] if clamps or blocks else None
    settings, skipped, staged = _staged(
        subject, objective, data, cfg, plan, tuning.settings, bool(clamps or blocks), observer
    )
    records += skipped
    notes += staged
    tuned, timeline = None, None
    recover = bool(clamps) and settings.fd is None and settings.nf is None
    if recover and objective.kind is not None:
        valid_after = _valid_value(subject, objective, data, seed)
        if valid_after <= valid_before + max(1e-3 * abs(valid_before), 1e-4):
            notes.append(
                f"no fine-tune: the bounded scale kept the validation objective ({valid_before:.4g} -> "
                f"{valid_after:.4g}), so there was no likelihood to recover"
            )
            recover = False
    if objective.kind is not None and (recover or settings.fd or settings.nf) and settings.steps:
        every = tuning.monitor_every or max(1, settings.steps // 5)
        ood = cfg.ood or (DEFAULT_OOD if cfg.default_ood else ())
        result, timeline = _monitored_fine_tune(subject, objective, data, settings, seed, every, ood, tuning.deadline)
        tuned = {"objective": objective.kind, **settings.to_dict(), **result.to_dict()}
        records += _fine_tune_records(settings)
        notes += [f"fine-tune: {result.stopped}"] if result.stopped else []
        if result.skipped_regularized:
            notes.append(
                f"fine-tune: the regularized loss was non-finite on {result.skipped_regularized} of "
                f"{result.regularized} regularized steps (skipped): the FD/NF term acted on "
                f"{result.regularized - result.skipped_regularized} of them"
            )
    elif clamps and objective.kind is None:
        notes.append(f"no fine-tune after the bounded scale: {objective.note}")
    after_value = _price(subject, objective, data, seed)[1]
    price = Price(metric, before_value, after_structure, after_value, data.heldout_name, len(data.heldout))
    provenance = _provenance(subject, plan, records, tuned, price, seed)
    if subject.native is not None:
        blob, kind = native_bytes(subject.model.module, subject.native, clamps, blocks, provenance), "native"
    else:
        blob, kind = state_dict_bytes(subject.model.module), "state_dict"
    repaired_model, target = rebuilt(subject, blob, clamps, output)
    after = execute(Job(repaired_model, cfg, arrays=dict(data.arrays)), observer)
    after = replace(after, target=TargetRecord.of({**after.target, **target}))
    after = replace(
        after, comparison=compare(before_report, after, metric_table(), base_name=f"before: {subject.name}")
    )
    status = RepairStatus.REPAIRED if after.exit_code is ExitCode.OK else RepairStatus.NOT_FIXED
    if output is not None:
        from innaudit.safeio.atomic import write_target

        write_target(output, blob)
    return RepairResult(
        status,
        plan,
        before_report,
        after,
        tuple(_judged(r, plan, after) for r in records),
        price,
        tuned,
        timeline,
        blob,
        kind,
        output,
        _load_hint(subject, kind, output, clamps),
        time.monotonic() - tuning.start,
        tuple(notes),
    )


def _judged(record: RemedyResult, plan: Plan, after: Report) -> RemedyResult:
    """The re-audit's verdict on the evidence this remedy was chosen on."""
    outcome, now = judge(after, plan.evidence(record.remedy))
    return replace(record, outcome=outcome, after=now)


def _load_hint(subject: Subject, kind: str, output: str | None, clamps: Mapping[str, float]) -> str:
    """How to load the checkpoint; ``bound_scales`` is ``from innaudit.remedies import bound_scales``."""
    path = output or "FIXED.pt"
    if kind == "native":
        return f"innaudit run {path}"
    if subject.kind == "factory":
        hint = f"innaudit run {subject.given} --weights {path}"
        return hint + (" (the factory applies bound_scales(model, CLAMPS) first)" if clamps else "")
    return f"model.load_state_dict(torch.load({path!r}, weights_only=True))" + (
        "; bound_scales(model, CLAMPS)" if clamps else ""
    )
