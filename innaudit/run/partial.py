"""The report of a run that was stopped: what it reached, and why it ended there.

A run stopped from outside (``--timeout``, SIGTERM, SIGHUP) or whose audit process died still
owes the user a report: :class:`Partial` follows the run as an observer (in this process, or
from the isolated child's events) and :meth:`Partial.report` builds the report of the audits
finished so far, with the audit that was running marked ``error`` with the reason, the plan as
far as it was carried out (``run.plan``), and the reason in ``errors`` (exit 2). A run stopped
before its model and data were loaded gets a report too, saying so: slow is not broken.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any

from innaudit._version import __version__
from innaudit.audits import REGISTRY, selected_audits
from innaudit.core.records import RunRecord, TargetRecord
from innaudit.core.results import AuditResult, Report, Status
from innaudit.run.audits import RunHeader, assemble, versions
from innaudit.run.job import Job

__all__ = ["Partial", "Tee"]


class Partial:
    """What a run has reached: its header, plan and finished audits, and the one running."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.header: RunHeader | None = None
        self.results: list[AuditResult] = []
        self.running: tuple[str, str] | None = None
        self.plan: dict[str, Any] | None = None
        self.threads: dict[str, Any] | None = None
        self._live: Any = None

    # -- the Observer protocol (innaudit.run.audits.Observer) --------------------------------
    def run_started(self, header: RunHeader) -> None:
        self.header = header

    def plan_ready(self, run: Any) -> None:
        self._live = run

    def audit_started(self, audit_id: str, title: str) -> None:
        self.running = (audit_id, title)

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        pass

    def audit_finished(self, result: AuditResult) -> None:
        self.results.append(result)
        self.running = None

    # -- the report --------------------------------------------------------------------------
    def current_plan(self) -> dict[str, Any] | None:
        """``run.plan`` as carried out so far (from the live plan in this process, or the last
        one the child sent)."""
        return self._live.report() if self._live is not None else self.plan

    def current_threads(self) -> dict[str, Any] | None:
        """``run.threads`` as the thread policy chose it (the live plan's, or the child's)."""
        return self._live.threads.to_dict() if self._live is not None else self.threads

    def report(self, reason: str) -> Report:
        """The partial report: exit 2, ``reason`` in its errors."""
        if self.header is None:
            return self._unloaded(reason)
        results = list(self.results)
        running = self.running or self._next_audit()
        said = reason if reason.startswith("stopped") else f"stopped: {reason}"  # "stopped by SIGTERM"
        if running:  # the audit running (or being planned) when the run stopped
            aid, title = running
            results.append(AuditResult(aid, title, Status.ERROR, said, 0.0, 0, error=reason))
        report = assemble(self.header, results, (f"the run was {said}",))
        threads = self.current_threads()
        if threads is not None:  # the policy's record, as a finished run's report has it
            report = replace(report, run=replace(report.run, threads=threads))
        plan = self.current_plan()
        if plan is None:
            return report
        return replace(report, run=replace(report.run, plan=plan))

    def _next_audit(self) -> tuple[str, str] | None:
        """The first selected audit without a result: the one being prepared."""
        config = self.job.config
        done = {r.id for r in self.results}
        for aid in selected_audits(config):
            if aid not in config.skip and aid not in done:
                return aid, REGISTRY[aid].title
        return None

    def _unloaded(self, reason: str) -> Report:
        """The report of a run stopped while its model and data were still being loaded."""
        config = self.job.config

        run = RunRecord(
            seed=config.seed,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            device=config.device,
            dtype="unknown (the model was not loaded)",
            versions=versions(),
            platform=sys.platform,
            config=config.to_dict(),
        )
        model = self.job.model if isinstance(self.job.model, str) else type(self.job.model).__name__
        return Report(
            tool={"name": "innaudit", "version": __version__},
            run=run,
            target=TargetRecord(model=model),
            audits=(),
            errors=(
                f"the run was stopped while the model and the data were loading: {reason}; "
                "no audit ran (it was slow, not necessarily broken: allow more time)",
            ),
            fail_on=Status(config.fail_on),
        )


class Tee:
    """An observer that hands every event to each of ``observers`` (those that have the method)."""

    def __init__(self, *observers: Any) -> None:
        self.observers = observers

    def _each(self, name: str, *args: Any) -> None:
        for observer in self.observers:
            method = getattr(observer, name, None)
            if callable(method):
                method(*args)

    def run_started(self, header: RunHeader) -> None:
        self._each("run_started", header)

    def plan_ready(self, run: Any) -> None:
        self._each("plan_ready", run)

    def audit_started(self, audit_id: str, title: str) -> None:
        self._each("audit_started", audit_id, title)

    def progress(self, audit_id: str, dataset: str, done: int, total: int) -> None:
        self._each("progress", audit_id, dataset, done, total)

    def audit_finished(self, result: AuditResult) -> None:
        self._each("audit_finished", result)
