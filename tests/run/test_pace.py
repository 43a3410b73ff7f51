"""A budget that holds: audits stopped at a batch by their deadline, plans refused before any
audit when even their floors exceed the budget, exact Jacobians only where they fit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import innaudit
from innaudit.audits import REGISTRY, AuditContext
from innaudit.audits.common import batch_units, by_set
from innaudit.config.settings import AuditSettings
from innaudit.core.errors import UsageError
from innaudit.run import plan as planning
from innaudit.run import threads as thread_policy
from innaudit.run.pace import Pace
from innaudit.run.plan import Plan, PlanRun, Timing, Units, _fitting, _need, _Speed, replan
from innaudit.run.threads import ThreadChoice

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures_models.py"


def _x(n: int) -> torch.Tensor:
    return torch.rand(n, 4, generator=torch.Generator().manual_seed(0))


def test_pace_answers_false_once_past_the_deadline_and_keeps_where() -> None:
    now = [0.0]
    pace = Pace(10.0, clock=lambda: now[0])
    assert pace(1, 5) and pace.cut is None
    now[0] = 11.0
    assert pace(5, 5) and pace.cut is None  # nothing left to cut
    assert not pace(2, 5) and pace.cut == (2, 5)
    now[0] = 0.0
    assert not pace(3, 5) and pace.cut == (2, 5)  # once stopped, stopped


def test_a_paced_map_runs_the_first_batch_of_every_set_then_stops() -> None:
    from innaudit.audits import specs
    from innaudit.config.settings import parse_config
    from innaudit.run.job import Job, prepare

    model = prepare(Job(f"{FIXTURES}:exact", parse_config({"data": "gaussian"}, specs()))).loaded.model
    ctx = AuditContext(model, [], AuditSettings({}, {}), 0, 10, 2, torch.device("cpu"), False, (4,))
    units = batch_units([6, 6, 4], 2)  # 3 + 3 + 2 batches
    ran: list[tuple[int, int, int]] = []

    def work(unit: tuple[int, int, int]) -> int:
        ran.append(unit)
        return unit[1]

    assert ctx.map(units, work, paced=True) == [u[1] for u in units]  # on time: everything
    ran.clear()
    stopped = replace(ctx, pace=lambda done, total: done < 2)
    parts = stopped.map(units, work, paced=True)
    assert ran == [(0, 0, 2), (0, 2, 4), (1, 0, 2), (2, 0, 2)]
    assert by_set(units, parts, 3) == [[0, 2], [0], [0]]
    ran.clear()
    assert len(stopped.map(units, work)) == len(units) and len(ran) == len(units)  # not paced: all


def test_an_audit_past_its_deadline_stops_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PlanRun, "_allowance", lambda self, audit_id: 0.0)  # every deadline is now
    report = innaudit.audit(
        f"{FIXTURES}:exact", data=_x(60), ood={"u": _x(40)}, audits=["roundtrip"], budget="10m", batch_size=10
    )
    result = report.audit("roundtrip")
    assert [r.metrics["n"] for r in result.results] == [10, 10]  # one batch of each set, then stopped
    (cut,) = [r for r in report.run["replans"] if "audit" in r]
    assert cut["audit"] == "roundtrip" and cut["stopped_at"] == "1 of 10 batches"
    (planned,) = report.run["plan"]["audits"]
    assert "stopped by the budget at 1 of 10 batches" in planned["cut"]
    assert any("roundtrip stopped early" in w for w in report.warnings)


def _slow_units(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    slow = Timing(0.0, seconds)

    def units(model, x, kinds=planning.KINDS):  # type: ignore[no-untyped-def]
        return Units(slow, slow, slow, slow, 1e-9, len(x), int(x[0].numel()))

    monkeypatch.setattr(planning, "measure_units", units)


def test_a_plan_over_its_budget_is_refused_before_any_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    _slow_units(monkeypatch, 1.0)  # a second per sample: 100 samples per set are 200 s at least
    ran: list[str] = []
    monkeypatch.setattr(REGISTRY["roundtrip"], "run", lambda self, ctx: ran.append("ran") or iter(()))
    with pytest.raises(UsageError, match=r"--budget 5.0 s is too short for this run.*roundtrip"):
        innaudit.audit(f"{FIXTURES}:exact", data=torch.rand(200, 4), ood=[], audits=["roundtrip"], budget="5s")
    assert not ran


def test_the_cli_refuses_it_in_one_line_and_plan_says_so(monkeypatch: pytest.MonkeyPatch, run_cli, tmp_path) -> None:
    _slow_units(monkeypatch, 1.0)
    out = tmp_path / "r.json"
    args = ("run", f"{FIXTURES}:exact", "--data", "gaussian", "--audit", "roundtrip", "--budget", "5s")
    result = run_cli(*args, "-o", f"json={out}")
    assert result.code == 2 and len(result.stderr_lines) == 1 and "too short" in result.stderr
    assert not out.exists()
    shown = run_cli(*args, "--plan")
    assert shown.code == 0 and "the estimate exceeds the budget" in shown.stdout


def _remake(audit: Any) -> Any:
    """The need of ``audit`` with other options, as the planner remakes it (32 samples)."""
    units = Units(Timing(0.0, 1e-4), Timing(0.0, 1e-4), Timing(0.0, 1e-4), Timing(0.0, 1e-4), 1e-12, 32, 3072)
    return lambda options: replace(_need(audit, options, [], 32, _Speed(units, 32)), capacities=(32,))


def test_exact_jacobians_only_where_they_fit_the_share() -> None:
    audit = REGISTRY["logdet"]
    units = Units(Timing(0.0, 1e-4), Timing(0.0, 1e-4), Timing(0.0, 1e-4), Timing(0.0, 1e-4), 1e-12, 32, 3072)
    options = {**audit.options, "method": "auto"}
    exact = replace(_need(audit, {**options, "method": "exact"}, [], 32, _Speed(units, 32)), capacities=(32,))
    assert exact.method == "exact" and exact.seconds(2) > 0
    floor = exact.seconds(2)
    assert _fitting(audit, exact, options, 10 * floor, _remake(audit)).method == "exact"
    assert _fitting(audit, exact, options, floor / 10, _remake(audit)).method == "matrix-free"
    pinned = {**options, "method": "exact"}  # asked for by name: kept
    assert _fitting(audit, exact, pinned, floor / 10, _remake(audit)).method == "exact"


def test_a_much_slower_audit_rechecks_the_threads_and_every_replan_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    # the probe is a fake: the machine's idle cores (a loaded test run's) are not its to read
    monkeypatch.setattr(thread_policy, "idle_cores_during", lambda run: (run(), None))
    flat = Timing(0.0, 1e-3)
    units = Units(flat, flat, flat, flat, 1e-9, 8, 4)
    needs = [
        _need(REGISTRY["roundtrip"], REGISTRY["roundtrip"].options, [], 64, _Speed(units, 8)),
        _need(REGISTRY["sampling"], REGISTRY["sampling"].options, [], 64, _Speed(units, 8)),
    ]
    needs = [replace(n, capacities=(64,)) for n in needs]
    probes: list[int] = []

    def probe() -> float:
        probes.append(torch.get_num_threads())
        return 1.0

    run = PlanRun(Plan(units, 60.0, replan(needs, 60.0), 8), needs, ThreadChoice(2, "measured", 2, {1: 2, 2: 1}), probe)
    before = torch.get_num_threads()
    try:
        run.finished("roundtrip", 100 * run.current["roundtrip"].model_s)
    finally:
        torch.set_num_threads(before)
    assert probes == [1, 2] and run.threads.threads == 1  # equal timings: the fewer threads
    (replanned,) = run.replans
    assert replanned["after"] == "roundtrip" and replanned["threads"] == 1 and replanned["factor"] == 4.0


def test_a_long_unbudgeted_plan_prints_the_plan_and_the_hint_up_front() -> None:
    import contextlib
    import io

    from innaudit.cli.output import ProgressObserver
    from innaudit.run.plan import LONG_RUN_S

    flat = Timing(0.0, 1.0)
    units = Units(flat, flat, flat, flat, 1e-9, 8, 4)
    need = replace(
        _need(REGISTRY["roundtrip"], REGISTRY["roundtrip"].options, [], 1000, _Speed(units, 8)), capacities=(1000,)
    )
    run = PlanRun(Plan(units, None, replan([need], None), 8), [need])
    assert run.plan.estimated_s > LONG_RUN_S == 180.0
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        ProgressObserver("plain").plan_ready(run)
    text = buffer.getvalue()
    assert "planned to take about" in text and "--budget 3m" in text
    assert "roundtrip" in text and "threads:" in text  # the plan itself, before any audit
    short = PlanRun(Plan(units, None, replan([replace(need, capacities=(10,))], None), 8), [need])
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        ProgressObserver("plain").plan_ready(short)
    assert buffer.getvalue() == ""
