"""A budget that holds inside ``precision`` and ``logdet`` batches and across many sets: work
begun after the deadline costs one minimal unit (one sample, one Lanczos step), a cut is a
warning with ``budget_cut_fraction`` (never a pass on what was not measured), and a failure
found before the cut still fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import innaudit
from innaudit.audits import AuditContext
from innaudit.audits import spectrum as spectrum_module
from innaudit.audits.common import RowChunks, late_rows
from innaudit.config.settings import AuditSettings
from innaudit.run.pace import Pace
from innaudit.run.plan import PACED_INSIDE, PlanRun

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures_models.py"
LOGDET_MODELS = '''
import torch
from torch import nn
import sys
sys.path.insert(0, {root!r})
from fixtures_models import ExactLinear


class Shifted(ExactLinear):
    """The exact linear flow whose log-det is 5 nats too large; NaN at row 1 when ``nan``."""

    def __init__(self, nan: bool = False) -> None:
        super().__init__()
        self.nan = nan

    def forward(self, x):
        z, ld = super().forward(x)
        ld = ld + 5.0
        if self.nan and len(x) > 1:
            ld = ld.clone()
            ld[1] = float("nan")
        return z, ld


def shifted():
    return Shifted()


def shifted_nan():
    return Shifted(nan=True)
'''


@pytest.fixture
def overdue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every budgeted audit starts past its deadline."""
    monkeypatch.setattr(PlanRun, "_allowance", lambda self, audit_id: 0.0)


def _data(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 4, generator=torch.Generator().manual_seed(0))


def _budgeted(spec: str, audit: str, options: dict[str, object]) -> innaudit.Report:
    """``audit`` alone on 8 samples of :func:`_data`, no OOD set, under a budget (the ``overdue``
    fixture, where a test takes it, puts every deadline in the past)."""
    return innaudit.audit(spec, data=_data(), ood=[], audits=[audit], budget="10m", config={audit: options})


def test_precision_and_logdet_are_paced_inside() -> None:
    assert {"precision", "logdet"} <= PACED_INSIDE


def _ctx(pace: Pace) -> AuditContext:
    return AuditContext(
        torch.nn.Identity(),  # type: ignore[arg-type]  # never called
        [],
        AuditSettings({}, {}),
        0,
        10,
        2,
        torch.device("cpu"),
        False,
        (4,),
        pace=pace,
        overdue=pace.overdue,
        left=pace.left,
    )


def test_row_chunks_cover_a_batch_without_a_budget_and_stop_at_the_deadline() -> None:
    free = AuditContext(
        torch.nn.Identity(),  # type: ignore[arg-type]
        [],
        AuditSettings({}, {}),
        0,
        10,
        2,
        torch.device("cpu"),
        False,
        (4,),
    )
    assert list(RowChunks(free)(50)) == [(0, 50)]  # no budget: the batch as it is
    now = [0.0]
    pace = Pace(10.0, clock=lambda: now[0])
    chunks = RowChunks(_ctx(pace), clock=lambda: now[0])
    got = []
    for lo, hi in chunks(50):
        got.append((lo, hi))
        now[0] += 4.0  # each range "takes" 4 s of the pace's clock
    assert got[0] == (0, 1)  # no rate measured yet: one row
    # 4 s a row: each later range fits half the time left (one row), and none after the deadline
    assert got == [(0, 1), (1, 2), (2, 3)] and now[0] > 10.0 and pace.stops == 1


def test_a_set_begun_late_gets_one_row() -> None:
    now = [20.0]
    ctx = _ctx(Pace(10.0, clock=lambda: now[0]))
    assert late_rows(ctx, (0, 0, 16)) == 1 and late_rows(ctx, (0, 16, 32)) == 16  # only a set's first batch
    now[0] = 0.0
    assert late_rows(ctx, (1, 0, 16)) == 16


def test_a_precision_run_past_its_deadline_measures_one_sample_per_set_and_warns(overdue: None) -> None:
    report = _budgeted(f"{FIXTURES}:exact", "precision", {"samples": 8})
    result = report.audit("precision")
    assert [r.dataset for r in result.results] == ["data", "prior@T=1"]
    for measured in result.results:
        assert measured.metrics["n"] == 1 and measured.metrics["budget_cut_fraction"] == pytest.approx(7 / 8)
        assert "stopped this set's sub-batches at 1 of the 8 sample(s)" in measured.message
        assert measured.metrics["float32"]["invertible"] == 1  # what was measured is reported
    assert result.status is innaudit.Status.WARN  # invertible where measured, but not measured in full


def test_a_precision_failure_found_before_the_cut_still_fails(overdue: None) -> None:
    report = _budgeted(f"{FIXTURES}:nan_half", "precision", {"samples": 8, "prior": False})
    result = report.audit("precision")
    (measured,) = result.results
    assert measured.metrics["budget_cut_fraction"] == pytest.approx(7 / 8)
    assert measured.metrics["required"]["nonfinite_fraction"] == 1.0  # row 0 is NaN
    assert result.status is innaudit.Status.FAIL


def test_precision_on_time_is_not_cut() -> None:
    report = _budgeted(f"{FIXTURES}:exact", "precision", {"samples": 8})
    for measured in report.audit("precision").results:
        assert measured.metrics["n"] == 8 and "budget_cut_fraction" not in measured.metrics


@pytest.fixture
def shifted(tmp_path: Path) -> Path:
    path = tmp_path / "shifted_models.py"
    path.write_text(LOGDET_MODELS.format(root=str(FIXTURES.parent)))
    return path


def test_a_logdet_run_past_its_deadline_judges_one_sample_and_still_fails(overdue: None, shifted: Path) -> None:
    report = _budgeted(f"{shifted}:shifted", "logdet", {"samples": 8, "method": "exact"})
    result = report.audit("logdet")
    (measured,) = result.results
    m = measured.metrics
    assert m["budget_cut_fraction"] == pytest.approx(7 / 8)
    assert m["error"]["max"] == pytest.approx(5.0, rel=1e-4)  # the sample measured: 5 nats off
    assert m["nonfinite_fraction"] == 0.0  # the samples left without a reference are not judged
    assert "7 not computed, not judged" in measured.message
    assert result.status is innaudit.Status.FAIL


def test_a_nonfinite_log_det_fails_even_where_the_budget_cut_the_reference(overdue: None, shifted: Path) -> None:
    report = _budgeted(f"{shifted}:shifted_nan", "logdet", {"samples": 8, "method": "exact"})
    (measured,) = report.audit("logdet").results
    assert measured.metrics["nonfinite_fraction"] == pytest.approx(1 / 8)  # row 1, past the cut
    assert report.audit("logdet").status is innaudit.Status.FAIL


def test_a_stopped_quadrature_warns_and_stays_an_upper_bound(overdue: None) -> None:
    report = _budgeted(f"{FIXTURES}:exact", "logdet", {"samples": 8, "method": "matrix-free", "probes": 4, "steps": 4})
    result = report.audit("logdet")
    (measured,) = result.results
    m = measured.metrics
    assert m["budget_cut_fraction"] == 1.0 and m["reference"] == "estimated"
    assert m["error"]["max"] == 0.0  # the exact log-det lies below the one-step bound: nothing proved wrong
    assert result.status is innaudit.Status.WARN


def test_sets_after_the_deadline_cost_one_sample_and_one_lanczos_step(
    overdue: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows: list[int] = []
    real = spectrum_module.measure

    def counted(forward, inverse, x, **kw):  # type: ignore[no-untyped-def]
        rows.append(len(x))
        return real(forward, inverse, x, **kw)

    monkeypatch.setattr(spectrum_module, "measure", counted)
    report = innaudit.audit(
        f"{FIXTURES}:exact",
        data=_data(),
        ood=["uniform", "gaussian", "rademacher"],
        audits=["spectrum"],
        budget="10m",
        config={"spectrum": {"samples": 8, "method": "matrix-free"}},
    )
    result = report.audit("spectrum")
    assert len(result.results) == 4 and rows == [1, 1, 1, 1]  # one sample per set, no second batch
    for measured in result.results:
        assert measured.metrics["iterations"]["forward"]["max"] == 1.0
        assert measured.metrics["iterations"]["inverse"]["max"] == 1.0
        assert measured.metrics["budget_cut_fraction"] == 1.0
    assert result.status is innaudit.Status.WARN


def test_autograd_checks_are_made_once_per_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    from innaudit.audits import jacobians

    calls = [0]
    real = jacobians.autograd_blind_reason

    def counted(fn, x):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(fn, x)

    monkeypatch.setattr(jacobians, "autograd_blind_reason", counted)
    report = innaudit.audit(
        f"{FIXTURES}:exact",
        data=_data(),
        ood=["uniform", "gaussian"],
        audits=["spectrum"],
        batch_size=2,
        config={"spectrum": {"samples": 8, "method": "matrix-free"}},
    )
    assert len(report.audit("spectrum").results) == 3
    assert calls[0] == 2  # forward and inverse, once for 3 sets x 4 batches
