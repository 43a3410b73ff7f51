"""``logdet`` computes its reference only where the model's own log-det is finite."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import innaudit
from innaudit.audits import logdet as logdet_module

from ..fixtures_models import ExactLinear


class HalfBrokenLogDet(ExactLinear):
    """The exact linear flow whose log-det is NaN where ``x_0 > 0.5``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, ld = super().forward(x)
        return z, torch.where(x[:, 0] > 0.5, torch.full_like(ld, float("nan")), ld)


def test_the_reference_is_computed_only_for_finite_model_log_dets(monkeypatch: pytest.MonkeyPatch) -> None:
    rows: list[int] = []
    original = logdet_module.numerical_log_det

    def counted(model, x, *args):  # type: ignore[no-untyped-def]
        rows.append(len(x))
        return original(model, x, *args)

    monkeypatch.setattr(logdet_module, "numerical_log_det", counted)
    x = torch.rand(32, 4, generator=torch.Generator().manual_seed(0))
    broken = int((x[:, 0] > 0.5).sum())
    assert 0 < broken < 32
    report = innaudit.audit(HalfBrokenLogDet(), data=x, ood=[], audits=["logdet"], batch_size=8)
    result = report.audit("logdet").results[0]
    assert sum(rows) == 32 - broken  # the broken samples cost no Jacobian
    assert result.metrics["nonfinite_fraction"] == pytest.approx(broken / 32)
    assert result.metrics["error"]["median"] < 1e-4 and result.metrics["reference"] == "exact"
    reference = result.series["values"]["log_abs_det_j"]
    assert sum(v != v for v in reference) == broken  # NaN where not computed, the known value elsewhere
