"""InvertibilityMonitor: flags the first failing step, never a stable run, and leaves training alone."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
import torch

from innaudit.core.errors import UsageError
from innaudit.core.results import Status
from innaudit.monitor import InvertibilityMonitor, MonitorFailure, MonitorWarning, TrendRules, read_log
from innaudit.monitor.battery import SetFigures

from .models import ScaleCoupling, data, far


def _set_s(model: ScaleCoupling, value: float) -> None:
    with torch.no_grad():
        model.s.fill_(value)


def _exploding_run(monitor: InvertibilityMonitor, model: ScaleCoupling, steps: int = 10) -> list:
    """Stable (s ~ 1, moving a little) for steps 0-5, s = 30 from step 6: the far set overflows."""
    results = []
    for step in range(steps):
        _set_s(model, 1.0 + 0.01 * step if step < 6 else 30.0)
        results.append(monitor.step(step))
    return results


def test_explosion_from_step_6_is_flagged_at_step_6_not_before(tmp_path):
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(
        model, data=data(), ood={"far": far()}, every=1, on_fail="stop", log=tmp_path / "m.jsonl"
    )
    results = _exploding_run(monitor, model)
    assert [r.status for r in results[:6]] == [Status.PASS] * 6
    assert all(not r.findings and not r.stop for r in results[:6])
    assert results[6].status is Status.FAIL and results[6].stop and monitor.should_stop
    assert monitor.first_failure == 6
    first = [f for f in results[6].findings if f.rule == "nonfinite"]
    assert [(f.dataset, f.first) for f in first] == [("far", True)]
    assert results[6].sets["far"].nonfinite == 1.0 and results[6].sets["data"].nonfinite == 0.0
    later = [f for f in results[7].findings if f.rule == "nonfinite"]
    assert [(f.dataset, f.first) for f in later] == [("far", False)]
    checks = [r for r in read_log(tmp_path / "m.jsonl") if r["kind"] == "check"]
    assert [c["step"] for c in checks] == list(range(10))
    assert [c["status"] for c in checks].index("fail") == 6
    assert math.isnan(checks[6]["sets"]["far"]["rel_error"])


def test_sigma_min_collapse_on_data_warns_at_the_step_it_happens():
    # sigma_min(J_F) at x: for s = 30 the Jacobian [[1, 0], [s x2 e^(s x1), e^(s x1)]] is very skewed
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(model, data=data(), ood={"far": far()}, every=1, on_fail="stop")
    results = _exploding_run(monitor, model, 7)
    drops = [f for r in results for f in r.findings if f.rule == "sigma_min_drop" and f.dataset == "data"]
    assert len(drops) == 1 and "step 6" in drops[0].message
    before, after = results[5].sets["data"].sigma_min, results[6].sets["data"].sigma_min
    assert before / after > 10


def test_a_stable_run_is_never_flagged_with_the_default_noise_battery():
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(model, data=data(), every=2, on_fail="raise")
    for step in range(12):
        _set_s(model, 1.0 + 0.02 * step)
        monitor.step(step)
    assert [r.step for r in monitor.timeline] == [0, 2, 4, 6, 8, 10]
    assert all(r.status is Status.PASS and not r.findings for r in monitor.timeline)
    assert set(monitor.timeline[0].sets) == {"data", "uniform", "gaussian", "rademacher"}
    assert monitor.first_failure is None and not monitor.should_stop


def test_on_fail_raise_and_warn():
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(model, data=data(), ood={"far": far()}, every=1, on_fail="raise")
    with pytest.raises(MonitorFailure, match=r"far: 100\.0 % of round trips") as caught:
        _exploding_run(monitor, model)
    assert caught.value.result.step == 6
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(model, data=data(), ood={"far": far()}, every=1, on_fail="warn")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _exploding_run(monitor, model, 9)
    mine = [w for w in seen if issubclass(w.category, MonitorWarning)]
    assert len(mine) == 1 and "step 6" in str(mine[0].message)  # once, at the first failure
    assert not monitor.should_stop


def test_data_error_leaving_float32_rounding_warns():
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(
        model, data=data(), ood={"far": far()}, every=1, audits=("roundtrip",), rules=TrendRules(data_tolerance=1e-4)
    )
    monitor.step(0)
    with torch.no_grad():
        model.inverse_error.fill_(1e-2)  # the inverse now misses the forward's shift by 1e-2
    result = monitor.step(1)
    assert result is not None and result.status is Status.WARN
    assert [f.rule for f in result.findings] == ["data_error"]
    assert result.sets["data"].rel_error > 1e-4 and math.isnan(result.sets["data"].sigma_min)


def test_a_check_leaves_modes_rng_and_gradients_unchanged():
    model = ScaleCoupling()
    model.train()
    model.drop.eval()  # a sub-module in its own mode must keep it
    monitor = InvertibilityMonitor(model, data=data(), ood={"far": far()}, every=1)
    model(data()[:4])[0].sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    result = monitor.step(0)
    assert result is not None and result.sets["data"].sigma_min > 0  # the spectrum did run
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], after[0]) and np.array_equal(expected[1], after[1])
    assert expected[2] == after[2]
    assert model.training and not model.drop.training
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, grads[name]), name


def test_training_with_and_without_the_monitor_gives_the_same_weights():
    def train(monitored: bool) -> dict:
        torch.manual_seed(0)
        model = ScaleCoupling(0.5)
        model.drop.p = 0.2
        monitor = InvertibilityMonitor(model, data=data(), every=3) if monitored else None
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(12):
            x = model.drop(torch.rand(16, 2))  # uses the global RNG, as data pipelines do
            z, log_det = model(x)
            loss = (0.5 * z.pow(2).sum(1) - log_det).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if monitor is not None:
                monitor.step(step)
        return {k: v.clone() for k, v in model.state_dict().items()}

    plain, monitored = train(False), train(True)
    assert all(torch.equal(plain[k], monitored[k]) for k in plain)


def test_budget_puts_checks_off():
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(model, data=data(), every=1, budget=0.01)
    for step in range(5):
        monitor.step(step)  # no training time in between: the checks are all the wall time
    assert len(monitor.timeline) == 1


def test_scalars_and_summary_are_plain():
    model = ScaleCoupling()
    monitor = InvertibilityMonitor(model, data=data(), ood={"far": far()}, every=1)
    result = monitor.step(0)
    assert result is not None
    scalars = result.scalars()
    assert scalars["innaudit/status"] == 0.0 and "innaudit/far/sigma_min" in scalars
    summary = monitor.summary()
    assert summary["timeline"][0]["step"] == 0 and "duration_s" not in summary["timeline"][0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0}, "every=0"),
        ({"audits": ("attack",)}, "audits="),
        ({"on_fail": "halt"}, "on_fail="),
        ({"budget": 2.0}, "budget="),
        ({"ood": {"bad": torch.zeros(3, 5)}}, "shape"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, match):
    with pytest.raises((UsageError, Exception), match=match):
        InvertibilityMonitor(ScaleCoupling(), data=data(), **kwargs)


def test_trend_rule_boundaries():
    rules = TrendRules(drop_factor=10.0)
    fired: set = set()
    before = {"data": SetFigures(nonfinite=0.0, rel_error=1e-7, sigma_min=1.0)}
    assert rules.evaluate(1, {"data": SetFigures(0.0, 1e-7, 0.1)}, before, fired, "data") == []
    found = rules.evaluate(1, {"data": SetFigures(0.0, 1e-7, 0.099)}, before, fired, "data")
    assert [f.rule for f in found] == ["sigma_min_drop"]
    assert rules.evaluate(1, {"data": SetFigures(0.0, 1e-7, 0.0)}, before, fired, "data")[0].rule == "sigma_min_drop"
    with pytest.raises(ValueError, match="drop_factor"):
        TrendRules(drop_factor=1.0)
