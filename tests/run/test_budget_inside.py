"""A budget that holds inside work a batch cannot split: Lanczos iterations, the attack's steps
and restarts stop at the deadline, keep what they reached, and say so (never a silent pass)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import innaudit
from innaudit.linalg import extreme_singular_values, top_singular_value
from innaudit.run.pace import Pace
from innaudit.run.plan import PlanRun

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures_models.py"
DIGITS = "checkpoints/digits-affine.pt"


def _scaled(values: torch.Tensor):  # type: ignore[no-untyped-def]
    """``x -> x * values``: a batched diagonal map whose singular values are ``|values|``."""
    return lambda t: t * values.to(t.dtype)


def _stop_after(calls: int) -> tuple[list[int], object]:
    """A stop callback that answers True from its ``calls``-th question on, and its count."""
    asked = [0]

    def stop() -> bool:
        asked[0] += 1
        return asked[0] >= calls

    return asked, stop


def test_lanczos_stopped_keeps_the_steps_it_reached_and_flags_them() -> None:
    s = torch.linspace(1.0, 10.0, 40, dtype=torch.float64)  # sigma_max = 10, no early invariance
    x = torch.rand(3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    full = top_singular_value(_scaled(s), x, tol=1e-10, max_iter=40, generator=torch.Generator().manual_seed(1))
    assert full.stopped is None and bool(full.converged.all())
    assert torch.allclose(full.values, torch.full((3,), 10.0, dtype=torch.float64), rtol=1e-6)

    asked, stop = _stop_after(3)  # asked before iterations 2, 3, 4: stops before the 4th
    cut = top_singular_value(
        _scaled(s), x, tol=1e-10, max_iter=40, generator=torch.Generator().manual_seed(1), stop=stop
    )
    assert asked[0] == 3 and cut.iterations.tolist() == [3, 3, 3]
    assert cut.stopped is not None and bool(cut.stopped.all()) and not bool(cut.converged.any())
    assert bool((cut.values <= 10.0 * (1 + 1e-12)).all())  # a Ritz value: a lower bound of sigma_max
    assert bool((cut.values < full.values).all())


def test_a_stop_at_the_first_question_still_leaves_one_iteration() -> None:
    s = torch.linspace(0.5, 4.0, 16, dtype=torch.float64)
    x = torch.rand(2, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fwd, inv = extreme_singular_values(
        _scaled(s),
        _scaled(1 / s),
        x,
        tol=1e-10,
        max_iter=16,
        generator=torch.Generator().manual_seed(0),
        stop=lambda: True,
    )
    for est in (fwd, inv):
        assert est.iterations.tolist() == [1, 1] and est.stopped is not None and bool(est.stopped.all())
        assert bool(torch.isfinite(est.values).all())  # an estimate, never NaN (NaN reads as a broken map)
    assert bool((fwd.values <= 4.0).all()) and bool((inv.values <= 2.0 + 1e-12).all())


def test_pace_overdue_counts_and_says_where() -> None:
    now = [0.0]
    pace = Pace(10.0, clock=lambda: now[0])
    assert not pace.overdue() and pace.stops == 0 and pace.where() is None
    now[0] = 11.0
    assert pace.overdue() and pace.overdue() and pace.stops == 2
    assert (
        pace.where()
        == "2 loop(s) inside a batch (Lanczos iterations, attack steps, sub-batches, sets begun late cut to one sample)"
    )
    assert not pace(1, 4)
    assert pace.where() == (
        "1 of 4 batches, and 2 loop(s) inside a batch (Lanczos iterations, attack steps, sub-batches, "
        "sets begun late cut to one sample)"
    )


@pytest.fixture
def overdue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every budgeted audit starts past its deadline."""
    monkeypatch.setattr(PlanRun, "_allowance", lambda self, audit_id: 0.0)


def test_a_stopped_spectrum_warns_with_the_iterations_it_reached(overdue: None) -> None:
    report = innaudit.audit(
        f"{FIXTURES}:exact",
        data=torch.rand(8, 4, generator=torch.Generator().manual_seed(0)),
        ood=[],
        audits=["spectrum"],
        budget="10m",
        config={"spectrum": {"samples": 4, "method": "matrix-free"}},
    )
    result = report.audit("spectrum")
    (measured,) = result.results
    m = measured.metrics
    assert m["budget_cut_fraction"] == 1.0 and m["converged_fraction"] == 0.0
    assert m["iterations"]["forward"]["max"] == 1.0 and m["iterations"]["inverse"]["max"] == 1.0
    assert result.status is innaudit.Status.WARN  # a well-conditioned map, but not measured to the end
    assert "the budget stopped Lanczos on 1 of 1 sample(s)" in measured.message  # a late set: one sample
    assert "measured on 1 of its first batch's 4 sample(s)" in measured.message and m["n"] == 1
    (cut,) = [r for r in report.run["replans"] if "audit" in r]
    assert cut["audit"] == "spectrum" and "loop(s) inside a batch" in cut["stopped_at"]
    assert any("spectrum stopped early" in w for w in report.warnings)


def test_without_a_budget_nothing_is_stopped(overdue: None) -> None:
    report = innaudit.audit(
        f"{FIXTURES}:exact",
        data=torch.rand(8, 4, generator=torch.Generator().manual_seed(0)),
        ood=[],
        audits=["spectrum"],
        config={"spectrum": {"samples": 4, "method": "matrix-free"}},
    )
    (measured,) = report.audit("spectrum").results
    assert "budget_cut_fraction" not in measured.metrics and measured.metrics["converged_fraction"] == 1.0
    assert report.audit("spectrum").status is innaudit.Status.PASS


def test_a_stopped_layers_trace_warns(overdue: None) -> None:
    report = innaudit.audit(
        DIGITS, audits=["layers"], ood=[], budget="10m", config={"layers": {"samples": 4, "method": "matrix-free"}}
    )
    result = report.audit("layers")
    (measured,) = result.results
    assert measured.metrics["budget_cut_fraction"] == 1.0 and measured.metrics["blocks"] > 1
    assert result.status in (innaudit.Status.WARN, innaudit.Status.FAIL)
    assert "the budget stopped the block spectra of 1 of 1 traced sample(s)" in measured.message
    assert "this set's trace took 1 of its 2 worst samples" in measured.message
    assert measured.series["blocks"]["rel_error_max"]  # the block round trips are still measured


def test_a_cut_attack_reports_its_steps_and_warns(overdue: None) -> None:
    report = innaudit.audit(
        f"{FIXTURES}:exact",
        data=torch.rand(6, 4, generator=torch.Generator().manual_seed(0)),
        ood=[],
        audits=["attack"],
        budget="10m",
        config={"attack": {"samples": 6, "steps": 50, "restarts": 3}},
    )
    result = report.audit("attack")
    (measured,) = result.results
    m = measured.metrics
    assert m["steps"] == 50 and m["steps_run"] == 0 and m["budget_cut_fraction"] == 1.0
    assert m["random_search"]["evaluations"] == 1  # as many points as the attack scored
    assert m["nonfinite_fraction"] == 0.0
    assert result.status is innaudit.Status.WARN  # no failure found in the steps run: not a pass
    assert "stopped the search after 0 of 50 steps" in measured.message


def test_a_failure_found_before_the_cut_still_fails(overdue: None) -> None:
    report = innaudit.audit(
        f"{FIXTURES}:nan_half",
        data=torch.rand(6, 4, generator=torch.Generator().manual_seed(0)),
        ood=[],
        audits=["attack"],
        budget="10m",
        config={"attack": {"samples": 6, "steps": 50}},
    )
    result = report.audit("attack")
    (measured,) = result.results
    assert measured.metrics["nonfinite_fraction"] == 0.5 and measured.metrics["budget_cut_fraction"] == 0.5
    assert result.status is innaudit.Status.FAIL


def test_an_attack_on_time_is_not_cut() -> None:
    report = innaudit.audit(
        f"{FIXTURES}:exact",
        data=torch.rand(4, 4, generator=torch.Generator().manual_seed(0)),
        ood=[],
        audits=["attack"],
        budget="10m",
        config={"attack": {"samples": 4, "steps": 5, "restarts": 2}},
    )
    (measured,) = report.audit("attack").results
    assert "budget_cut_fraction" not in measured.metrics and "steps_run" not in measured.metrics
    assert measured.metrics["random_search"]["evaluations"] == 12


def test_a_floor_that_stops_inside_is_planned_at_its_share_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from innaudit.run import plan as planning
    from innaudit.run.plan import Timing, Units

    slow = Timing(0.0, 1.0)  # a second per sample and call: 2 samples of Lanczos are minutes

    def units(model, x, kinds=planning.KINDS):  # type: ignore[no-untyped-def]
        return Units(slow, slow, slow, slow, 1e-9, len(x), int(x[0].numel()))

    monkeypatch.setattr(planning, "measure_units", units)
    report = innaudit.audit(
        f"{FIXTURES}:exact",
        data=torch.rand(8, 4, generator=torch.Generator().manual_seed(0)),
        ood=[],
        audits=["spectrum"],
        budget="20s",
        config={"spectrum": {"samples": 4, "method": "matrix-free"}},
    )
    (planned,) = report.run["plan"]["audits"]
    assert planned["estimated_s"] <= 20 * planning.SAFETY and "its loops stop at the deadline" in planned["cut"]
    assert report.audit("spectrum").status is not innaudit.Status.ERROR
