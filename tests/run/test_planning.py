"""The cost model, the budget planner, ``--plan``/``--budget``/``--batch-size auto`` and plain progress lines."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

import innaudit
from innaudit.audits import REGISTRY, specs
from innaudit.cli.output import PLAIN_EVERY_S, ProgressObserver
from innaudit.config.duration import parse_duration
from innaudit.config.settings import parse_config
from innaudit.core.domain import DataDomain
from innaudit.core.errors import ConfigError
from innaudit.loading.native import save_checkpoint
from innaudit.run.job import Job, prepare
from innaudit.run.plan import (
    SAFETY,
    AuditCost,
    Cost,
    Timing,
    Units,
    _choose,
    _Need,
    _Speed,
    auto_batch_size,
    floor_samples,
    jacobian_costs,
    plan_run,
    replan,
)
from innaudit.zoo import build
from tests.helpers import FIXTURE_MODELS, read_report

FIXTURES = FIXTURE_MODELS
SCHEMA = json.loads((Path(innaudit.__file__).parent / "render" / "report.schema.json").read_text())


def _units(vjp: float = 1e-3, jvp: float = 1e-3, dense: float = 1e-9, dim: int = 64) -> Units:
    flat = Timing(0.0, 1e-4)
    return Units(flat, flat, Timing(0.0, vjp), Timing(0.0, jvp), dense, 32, dim)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2.5m", 150), (45, 45), ("120", 120)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten minutes", "5x", "0s", -3, "m"])
def test_parse_duration_rejects(bad: str | int) -> None:
    with pytest.raises(ConfigError, match="budget"):
        parse_duration(bad)


def test_cost_arithmetic_and_seconds() -> None:
    units = _units()
    c = Cost(forward=2, vjp=3) + Cost(inverse=1) * 2
    assert (c.forward, c.inverse, c.vjp) == (2, 2, 3)
    assert c.seconds(units) == pytest.approx(4 * 1e-4 + 3e-3)
    assert c.passes == 2 + 2 + 6
    per_call = Units(Timing(1.0, 0.0), Timing(0.0, 0.0), Timing(0.0, 0.0), Timing(0.0, 0.0), 0.0, 1, 2)
    assert Cost(forward=1).seconds(per_call, batch=4) == pytest.approx(0.25)  # the call is shared
    assert Timing.fit(1.0, 4.0, 4) == Timing(0.0, 1.0)


def test_method_is_chosen_by_cost_not_dimension() -> None:
    costs = jacobian_costs(3072, 64)
    assert _choose(costs, "auto", _Speed(_units(dim=3072), 64), 64) == "matrix-free"
    assert _choose(jacobian_costs(64, 64), "auto", _Speed(_units(), 64), 64) == "exact"
    # where JVPs are dear and dense algebra is free, exact wins even at d = 3072
    assert _choose(costs, "auto", _Speed(_units(vjp=1e-7, jvp=10.0, dense=0.0, dim=3072), 64), 64) == "exact"
    assert _choose(costs, "exact", _Speed(_units(dim=3072), 64), 64) == "exact"  # an explicit method stays


def _need(aid: str, per_sample: float, requested: int, sets: int = 1) -> _Need:
    cost = AuditCost(Cost(forward=per_sample / 1e-4))
    return _Need(aid, cost, _units(), 1, (requested,) * sets, requested, "", True)


def test_budget_is_shared_cheap_first_with_floors() -> None:
    needs = [_need("cheap", 1e-4, 10000, 4), _need("mid", 0.1, 64), _need("dear", 10.0, 64)]
    plan = {a.id: a for a in replan(needs, 60.0)}
    assert plan["cheap"].samples == 10000 and not plan["cheap"].cut  # 4 s: fits whole
    assert plan["mid"].samples == 64  # 6.4 s: fits whole
    assert floor_samples(64) <= plan["dear"].samples < 64 and "64 ->" in plan["dear"].cut
    assert sum(a.estimated_s for a in plan.values()) <= SAFETY * 60.0 + 1e-9
    unbudgeted = {a.id: a.samples for a in replan(needs, None)}
    assert unbudgeted == {"cheap": 10000, "mid": 64, "dear": 64}
    tight = {a.id: a.samples for a in replan(needs, 0.1)}  # below the floors: floors still hold
    assert tight == {"cheap": 100, "mid": 2, "dear": 2}


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small coupling flow at d = 3072 (CIFAR size, two steps)."""
    config = {"shape": [3072], "steps": 2, "hidden": 16}
    module = build("coupling-vector", config)
    path = tmp_path_factory.mktemp("wide") / "wide.pt"
    return save_checkpoint(path, module, "coupling-vector", config, DataDomain(shape=(3072,)))


def test_plan_at_cifar_size_uses_lanczos_and_fits_the_budget(wide_checkpoint: Path) -> None:
    config = parse_config(
        {
            "data": "uniform",
            "ood": ["gaussian"],
            "budget": "20s",
            "samples": 200,
            "audits": ["roundtrip", "spectrum", "logdet"],
        },
        specs(),
    )
    prepared = prepare(Job(str(wide_checkpoint), config))
    run = plan_run(prepared.loaded.model, prepared.datasets, config)
    plan = run.plan
    assert plan.get("spectrum").method == "matrix-free" and plan.get("logdet").method == "matrix-free"
    assert plan.budget_s == 20.0 and plan.estimated_s <= 20.0
    assert plan.get("roundtrip").samples <= 10000 and plan.units.dim == 3072
    ctx_options = run.context("spectrum", _ctx(prepared, config, "spectrum")).settings.options
    assert ctx_options["method"] == "matrix-free"
    assert ctx_options["samples"] == min(64, plan.get("spectrum").samples)


def _ctx(prepared: object, config: object, aid: str) -> object:
    from innaudit.run.audits import Subject, _context, _Silent

    subject = Subject(prepared.loaded.model, prepared.datasets, config, prepared.latent_shape)  # type: ignore[attr-defined, arg-type]
    return _context(aid, subject, _Silent(), 8)


def test_auto_batch_size_follows_free_memory(wide_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config({"data": "uniform"}, specs())
    assert config.batch_size == "auto"
    prepared = prepare(Job(str(wide_checkpoint), config))
    x = prepared.datasets[0].first(2)
    assert auto_batch_size(prepared.loaded.model, x) == 500  # plenty of memory: the cap
    monkeypatch.setattr("innaudit.run.plan.free_memory", lambda device: 4 << 20)
    small = auto_batch_size(prepared.loaded.model, x)
    assert 1 <= small < 500


def test_plan_flag_prints_the_plan_and_exits_zero(run_cli) -> None:
    result = run_cli(
        "run", f"{FIXTURES}:exact", "--data", "gaussian", "--plan", "--audit", "roundtrip", "--audit", "spectrum"
    )
    assert result.code == 0, result.stderr
    assert "roundtrip" in result.stdout and "spectrum" in result.stdout and "estimated" in result.stdout
    assert "budget: none" in result.stdout


def test_budget_run_records_the_plan(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = run_cli(
        "run",
        f"{FIXTURES}:exact",
        "--data",
        "gaussian",
        "--budget",
        "5s",
        "--audit",
        "roundtrip",
        "--audit",
        "spectrum",
        "-o",
        f"json={out}",
    )
    assert result.code == 0, result.stderr
    report = read_report(out)
    jsonschema.validate(report, SCHEMA)
    plan = report["run"]["plan"]
    assert plan["budget_s"] == 5.0 and report["run"]["config"]["budget"] == 5.0
    assert [a["id"] for a in plan["audits"]] == ["roundtrip", "spectrum"]
    for audit in plan["audits"]:
        assert audit["used_s"] >= 0 and audit["samples"] >= 1
    used = {a["id"]: a["samples"] for a in plan["audits"]}
    for audit in report["audits"]:
        assert all(r["metrics"]["n"] <= used[audit["id"]] for r in audit["results"])
    # not a terminal: plain progress lines, one at each audit's end
    assert any(line.startswith("innaudit: roundtrip done (pass)") and "ETA" in line for line in result.stderr_lines)


def test_plain_progress_lines_are_throttled() -> None:
    import contextlib
    import io

    now = [0.0]
    observer = ProgressObserver("plain", clock=lambda: now[0])
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        for t, done in ((0.0, 10), (1.0, 20), (PLAIN_EVERY_S - 0.5, 30), (PLAIN_EVERY_S + 0.5, 40)):
            now[0] = t
            observer.progress("roundtrip", "uniform", done, 100)
    lines = buffer.getvalue().splitlines()
    assert lines == [
        "innaudit: roundtrip uniform 10/100, elapsed 0 s",
        "innaudit: roundtrip uniform 40/100, elapsed 10 s",
    ]


def test_bad_budget_and_batch_size_are_one_line_errors(run_cli) -> None:
    for args in (("--budget", "soon"), ("--batch-size", "0"), ("--batch-size", "big")):
        result = run_cli("run", f"{FIXTURES}:exact", "--data", "gaussian", *args)
        assert result.code == 2 and len(result.stderr_lines) == 1 and result.stderr_lines[0].startswith("error:")


def _passes(cost: AuditCost) -> float:
    return cost.per_sample.passes + cost.per_set.passes


def test_every_audit_states_a_cost_that_grows_with_its_work() -> None:
    """What the budget relies on: lowering an option the budget may shrink (steps, iterations,
    probes) lowers the cost of a method that uses it and raises none; the default round trip is
    one forward and one inverse pass per sample, the attack's cost is linear in its steps + 1."""
    assert REGISTRY["roundtrip"].costs(64, REGISTRY["roundtrip"].options)[""].per_sample == Cost(forward=1, inverse=1)
    for aid, cls in REGISTRY.items():
        small = cls.costs(64, cls.options)
        assert small and all(_passes(c) > 0 for c in small.values()), aid
        for option, least in cls.shrinkable.items():
            lowered = {**cls.options, option: least}
            assert int(cls.options[option]) > least, (aid, option)
            cut = cls.costs(64, lowered)
            assert any(_passes(cut[m]) < _passes(small[m]) for m in small), (aid, option)
            assert all(_passes(cut[m]) <= _passes(small[m]) for m in small), (aid, option)
    attack = REGISTRY["attack"]
    steps = int(attack.options["steps"])
    full, half = (attack.costs(64, {**attack.options, "steps": s})[""] for s in (steps, steps // 2))
    assert full.per_sample.forward / half.per_sample.forward == pytest.approx((steps + 1) / (steps // 2 + 1))


def test_replan_after_an_audit_scales_the_rest_by_what_it_really_took() -> None:
    from innaudit.run.plan import Plan, PlanRun

    needs = [_need("first", 0.5, 64), _need("second", 1.0, 64)]
    run = PlanRun(Plan(_units(), 40.0, replan(needs, 40.0), 8), needs)
    before = run.current["second"].samples
    assert before < 64
    run.finished("first", 0.1 * run.current["first"].model_s)  # ten times faster than estimated
    after = run.current["second"]
    assert after.samples > before and after.estimated_s < after.model_s
    report = run.report()
    assert report["audits"][0]["used_s"] == pytest.approx(0.1 * run.current["first"].model_s, abs=1e-3)
    assert "used_s" not in report["audits"][1]


def test_only_the_kinds_of_work_the_audits_use_are_timed() -> None:
    """A roundtrip-only plan times forward and inverse and never differentiates the model; the
    spectrum's plan also times VJPs and JVPs."""
    from innaudit.run.plan import KINDS, kinds_used, measure_units

    def costs(aid: str) -> list[AuditCost]:
        return list(REGISTRY[aid].costs(64, REGISTRY[aid].options).values())

    assert kinds_used(costs("roundtrip")) == {"forward", "inverse"}
    assert {"vjp", "jvp"} <= kinds_used(costs("spectrum")) <= set(KINDS)
    model = prepare(Job(f"{FIXTURES}:exact", parse_config({}, specs()))).loaded.model
    graphs: list[bool] = []
    original = model.forward

    def forward(x, grad=False):  # type: ignore[no-untyped-def]
        graphs.append(grad)
        return original(x, grad=grad)

    object.__setattr__(model, "forward", forward)
    x = torch.rand(8, *model.info.domain.shape)
    measure_units(model, x, kinds_used(costs("roundtrip")))
    assert graphs and not any(graphs)
    measure_units(model, x, kinds_used(costs("spectrum")))
    assert any(graphs)
