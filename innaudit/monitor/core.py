"""``InvertibilityMonitor``: the audits, cheap and periodic, inside a training loop.

Every ``every``-th step the monitor runs a small audit battery (round trips on a fixed data batch
and fixed noise batches, extreme Jacobian singular values on a few fixed samples) in eval mode and
without autograd, puts back the training state (:mod:`innaudit.monitor.state`), holds the numbers
against the trend rules (:mod:`innaudit.monitor.rules`), appends the result to a JSONL log and
acts on a failure: ``warn`` (a :class:`MonitorWarning`), ``raise`` (:class:`MonitorFailure`) or
``stop`` (``result.stop`` and ``monitor.should_stop`` turn True; the callbacks stop the trainer).

The monitor never changes training: making it runs no model code, and a check puts back every
parameter, buffer and module attribute it finds changed (a lazy ActNorm initialization
triggered by the check is undone, then reported as an ``error`` finding ``mutation``), so a run
with the monitor trains bit for bit the same weights as without it.

Example (a plain loop)::

    monitor = InvertibilityMonitor(flow, data=x_test[:64], every=200, on_fail="stop", log="monitor.jsonl")
    for step in range(steps):
        ...  # forward, loss, backward, optimizer.step()
        result = monitor.step(step)
        if result is not None and result.stop:
            break
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from innaudit.config.choices import FAIL_ON
from innaudit.core.domain import DataDomain
from innaudit.core.errors import UsageError
from innaudit.core.results import Status, worst
from innaudit.data import DEFAULT_OOD, Dataset
from innaudit.model.contract import InvertibleModel
from innaudit.monitor.battery import DataArg, SetFigures, battery_config, figures, make_sets, run_battery
from innaudit.monitor.log import append_record, open_log
from innaudit.monitor.rules import Finding, TrendRules
from innaudit.monitor.state import mutation_message, preserved

__all__ = [
    "DEFAULT_EVERY",
    "InvertibilityMonitor",
    "MonitorFailure",
    "MonitorLogWarning",
    "MonitorResult",
    "MonitorWarning",
]

DEFAULT_EVERY = 200
"""Steps between two checks by default (the overhead at this interval is in the README)."""

ON_FAIL = ("warn", "raise", "stop")


class MonitorWarning(UserWarning):
    """A monitor check failed and ``on_fail="warn"``."""


class MonitorLogWarning(UserWarning):
    """The monitor's log could not be written (said once; the checks go on)."""


class MonitorFailure(RuntimeError):
    """A monitor check failed and ``on_fail="raise"``; ``result`` is the failing check."""

    def __init__(self, result: MonitorResult) -> None:
        super().__init__("; ".join(f.message for f in result.findings) or f"check at step {result.step} failed")
        self.result = result


@dataclass(frozen=True)
class MonitorResult:
    """One check.

    Attributes:
        step: the training step it ran after.
        status: the worst finding's status (``pass`` without findings).
        findings: what the trend rules found.
        sets: the figures per set (see :class:`innaudit.monitor.battery.SetFigures`).
        duration_s: wall time of the check.
        overhead: ``duration_s`` over the training time since the previous check (None first).
        stop: True when the check failed and ``on_fail="stop"``.
    """

    step: int
    status: Status
    findings: tuple[Finding, ...]
    sets: Mapping[str, SetFigures]
    duration_s: float
    overhead: float | None = None
    stop: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The ``check`` record of the JSONL log."""
        return {
            "kind": "check",
            "step": self.step,
            "status": self.status.value,
            "findings": [f.to_dict() for f in self.findings],
            "sets": {name: s.to_dict() for name, s in self.sets.items()},
            "duration_s": round(self.duration_s, 6),
            "overhead": None if self.overhead is None else round(self.overhead, 6),
            "stop": self.stop,
        }

    def summary(self) -> dict[str, Any]:
        """The record without wall times, for a checkpoint's provenance (a rebuild hashes the same)."""
        out = self.to_dict()
        for key in ("duration_s", "overhead", "kind"):
            out.pop(key)
        return out

    def scalars(self, prefix: str = "innaudit") -> dict[str, float]:
        """Flat numbers for a trainer's logger: ``prefix/SET/FIGURE`` and ``prefix/status``."""
        out = {f"{prefix}/status": float(self.status.rank)}
        for name, s in self.sets.items():
            for key, value in s.to_dict().items():
                out[f"{prefix}/{name}/{key}"] = value
        return out


def _as_model(model: InvertibleModel | nn.Module, domain: DataDomain | None, data: DataArg | None) -> InvertibleModel:
    if isinstance(model, InvertibleModel):
        return model  # it carries its own domain
    from innaudit.loading.adapt import adapt_module, declared_domain

    domain = domain or declared_domain(model) or _domain_of(data)
    return adapt_module(model, domain, {"loader": "monitor"})


def _domain_of(data: DataArg | None) -> DataDomain:
    if not isinstance(data, torch.Tensor):
        raise UsageError(
            "the monitor cannot tell the model's input shape: pass domain=DataDomain(...), "
            "a model with input_shape, or data= as a tensor of samples"
        )
    low, high = float(data.min()), float(data.max())
    return DataDomain(shape=tuple(int(s) for s in data.shape[1:]), low=low, high=high if high > low else low + 1)


class InvertibilityMonitor:
    """Periodic invertibility checks of a model while it trains.

    Args:
        model: the model being trained: an ``nn.Module`` with ``forward(x) -> z`` (or
            ``(z, log_det)``) and ``inverse(z)``, or an :class:`~innaudit.model.contract.InvertibleModel`.
        data: the in-distribution samples (a tensor, a Dataset, or a SPEC such as ``digits:test``);
            the first ``samples`` are fixed once, here.
        ood: held-out sets: SPECs (default: the paper's uniform, gaussian and rademacher noise,
            drawn once from ``seed``) or ``{name: tensor | Dataset | SPEC}``.
        every: check after every ``every``-th step (``step % every == 0``).
        audits: the battery, a subset of ``("roundtrip", "spectrum")``.
        budget: at most this share of wall time spent in checks (e.g. ``0.05``); a check that would
            exceed it is put off to a later step. None (default): checks run on a fixed schedule.
        on_fail: ``warn``, ``raise`` or ``stop``, when a check's status reaches ``fail_on``.
        log: a JSONL file: a ``start`` record is appended here (an existing log is kept and
            extended, as when a training run resumes) and every check appends one record. A
            folder, a socket or a missing folder is refused here; a write that fails later
            warns once (:class:`MonitorLogWarning`) and training goes on.
        samples: samples per set for the round trips.
        spectrum_samples: samples per set for the Jacobian singular values.
        rules: the trend rules' settings.
        domain: the data domain (shape, range) of an ``nn.Module`` that does not declare it
            (an InvertibleModel carries its own).
        seed: seeds the noise sets and the spectrum's random starts.
        fail_on: ``fail`` (default) or ``warn``: the status that triggers ``on_fail``.
        spectrum_method: ``auto`` (exact Jacobians up to 4096 dimensions, Lanczos above),
            ``exact`` or ``matrix-free``.
        spectrum_sets: ``"data"`` (default: the Jacobians only on the in-distribution set, or on
            every set when there is none), ``"all"``, or a list of set names.
    """

    def __init__(
        self,
        model: InvertibleModel | nn.Module,
        data: DataArg | None = None,
        ood: Mapping[str, DataArg] | Sequence[str] = DEFAULT_OOD,
        *,
        every: int = DEFAULT_EVERY,
        audits: Sequence[str] = ("roundtrip", "spectrum"),
        budget: float | None = None,
        on_fail: str = "warn",
        log: str | Path | None = None,
        samples: int = 64,
        spectrum_samples: int = 4,
        rules: TrendRules | None = None,
        domain: DataDomain | None = None,
        seed: int = 0,
        fail_on: str = "fail",
        spectrum_method: str = "auto",
        spectrum_sets: str | Sequence[str] = "data",
    ) -> None:
        _check_arguments(every, audits, budget, on_fail, fail_on, samples, spectrum_samples)
        self.model = _as_model(model, domain, data)
        self.every, self.budget, self.on_fail = int(every), budget, on_fail
        self.fail_on = Status(fail_on)
        self.rules = rules or TrendRules()
        domain = self.model.info.domain
        self.datasets: tuple[Dataset, ...] = make_sets(data, ood, domain, samples, seed)
        if not self.datasets:
            raise UsageError("the monitor has no set to check: pass data= or ood=")
        device = next((p.device for p in self.model.module.parameters()), torch.device("cpu"))
        self.config = battery_config(tuple(audits), samples, spectrum_samples, seed, str(device), spectrum_method)
        self.spectrum_sets = _spectrum_sets(spectrum_sets, self.datasets)
        self.timeline: list[MonitorResult] = []
        self.should_stop = False
        self.first_failure: int | None = None
        self._fired: set[tuple[str, str]] = set()
        self._calls = 0
        self._spent = 0.0
        self._started = self._last_end = time.perf_counter()
        self.latent_shape: tuple[int, ...] | None = None  # learnt at the first check, not here
        self.log = Path(log) if log is not None else None
        self._log_failed = False
        if self.log is not None:
            open_log(self.log, self._start_record())

    def _start_record(self) -> dict[str, Any]:
        return {
            "kind": "start",
            "every": self.every,
            "audits": list(self.config.audits),
            "samples": self.config.samples,
            "sets": [d.describe() for d in self.datasets],
            "spectrum_samples": self.config.settings["spectrum"].options["samples"],
            "spectrum_sets": list(self.spectrum_sets) if self.spectrum_sets is not None else "all",
            "rules": {"drop_factor": self.rules.drop_factor, "data_tolerance": self.rules.data_tolerance},
            "on_fail": self.on_fail,
            "fail_on": self.fail_on.value,
            "model": self.model.info.architecture,
            "torch": str(torch.__version__),
        }

    @property
    def data_set(self) -> str | None:
        """The name of the in-distribution set, if there is one."""
        from innaudit.data import Role

        return next((d.name for d in self.datasets if d.role is Role.IN_DISTRIBUTION), None)

    def step(self, step: int | None = None) -> MonitorResult | None:
        """Check when ``step`` (default: the number of calls so far) is a multiple of ``every``.

        Returns the check's result, or None when no check was due (or the budget put it off).
        """
        step = self._calls if step is None else int(step)
        self._calls += 1
        if step % self.every != 0:
            return None
        elapsed = time.perf_counter() - self._started
        if self.budget is not None and self.timeline and self._spent > self.budget * elapsed:
            return None
        return self.check(step)

    def check(self, step: int) -> MonitorResult:
        """Run one check now, whatever the schedule, and act on its status."""
        start = time.perf_counter()
        train_s = start - self._last_end
        changes: list[str] = []
        with preserved(self.model.module, changes):
            self.model.module.eval()
            reports = run_battery(self.model, self.datasets, self.config, self._latent_shape(), self.spectrum_sets)
        current, errors = figures(reports)
        previous = self.timeline[-1].sets if self.timeline else None
        findings = self.rules.evaluate(step, current, previous, self._fired, self.data_set)
        findings += [Finding("error", "", Status.ERROR, f"a monitor audit crashed: {e}") for e in errors]
        if changes:
            findings.append(Finding("mutation", "", Status.ERROR, mutation_message(changes)))
        status = worst(tuple(f.status for f in findings))
        failed = status.rank >= self.fail_on.rank
        duration = time.perf_counter() - start
        result = MonitorResult(
            step,
            status,
            tuple(findings),
            current,
            duration,
            duration / train_s if self.timeline and train_s > 0 else None,
            stop=failed and self.on_fail == "stop",
        )
        self._record(result, failed)
        return result

    def _latent_shape(self) -> tuple[int, ...]:
        """The shape of one ``z``, from one forward pass inside the first check (whose state
        is put back afterwards, so a lazy initialization it triggers is undone)."""
        if self.latent_shape is None:
            device = next((p.device for p in self.model.module.parameters()), torch.device("cpu"))
            x = self.datasets[0].first(1).to(device=device, dtype=self.model.dtype)
            z = self.model.forward(x)
            self.latent_shape = tuple(int(s) for s in z.shape[1:])
        return self.latent_shape

    def _append(self, record: Mapping[str, Any]) -> None:
        """Append to the log; a log that cannot be written warns once and training goes on."""
        assert self.log is not None
        try:
            append_record(self.log, record)
        except OSError as exc:
            if not self._log_failed:
                self._log_failed = True
                warnings.warn(
                    MonitorLogWarning(
                        f"the monitor log {str(self.log)!r} cannot be written ({exc.strerror or exc}); "
                        "checks go on, but this one and later ones may be missing from the log"
                    ),
                    stacklevel=5,
                )

    def _record(self, result: MonitorResult, failed: bool) -> None:
        self.timeline.append(result)
        if failed and self.first_failure is None:
            self.first_failure = result.step
        if self.log is not None:
            self._append(result.to_dict())
        self._last_end = time.perf_counter()
        self._spent += result.duration_s
        if not failed:
            return
        if self.on_fail == "stop":
            self.should_stop = True
        elif self.on_fail == "raise":
            raise MonitorFailure(result)
        else:
            for f in result.findings:
                if f.first and f.status.rank >= self.fail_on.rank:
                    warnings.warn(MonitorWarning(f.message), stacklevel=4)  # the caller of step()

    def summary(self) -> dict[str, Any]:
        """The timeline as plain data without wall times (for a checkpoint's provenance)."""
        return {
            "every": self.every,
            "audits": list(self.config.audits),
            "samples": self.config.samples,
            "sets": [d.name for d in self.datasets],
            "first_failure": self.first_failure,
            "timeline": [r.summary() for r in self.timeline],
        }


def _check_arguments(
    every: int,
    audits: Sequence[str],
    budget: float | None,
    on_fail: str,
    fail_on: str,
    samples: int,
    spectrum_samples: int,
) -> None:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise UsageError(f"every={every!r}; expected a whole number of steps, at least 1")
    unknown = [a for a in audits if a not in ("roundtrip", "spectrum")]
    if unknown or not audits:
        raise UsageError(f"audits={tuple(audits)!r}; expected a non-empty subset of ('roundtrip', 'spectrum')")
    if budget is not None and not 0 < budget < 1:
        raise UsageError(f"budget={budget!r}; expected a share of wall time between 0 and 1, e.g. 0.05")
    if on_fail not in ON_FAIL:
        raise UsageError(f"on_fail={on_fail!r}; expected one of {', '.join(ON_FAIL)}")
    if fail_on not in FAIL_ON:
        raise UsageError(f"fail_on={fail_on!r}; expected 'warn' or 'fail'")
    if samples < 1 or spectrum_samples < 1:
        raise UsageError(f"samples={samples}, spectrum_samples={spectrum_samples}; expected at least 1 each")


def _spectrum_sets(choice: str | Sequence[str], datasets: Sequence[Dataset]) -> tuple[str, ...] | None:
    """The names of the sets the Jacobian audit runs on (None: every set)."""
    from innaudit.data import Role

    names = [d.name for d in datasets]
    if choice == "all":
        return None
    if choice == "data":
        data = [d.name for d in datasets if d.role is Role.IN_DISTRIBUTION]
        return tuple(data) if data else None
    if isinstance(choice, str) or not set(choice) <= set(names):
        raise UsageError(f"spectrum_sets={choice!r}; expected 'data', 'all' or a list of set names among {names}")
    return tuple(choice)
