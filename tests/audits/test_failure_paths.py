"""Failure paths of sampling, logdet and grid on models whose failure is known in closed form."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import innaudit
from innaudit.core.results import Status

from ..fixtures_models import ExactLinear, NanHalfLinear


class HalfPlaneNaN(nn.Module):
    """The identity on R^2 whose inverse is NaN wherever ``z_0 > 0``: half of any grid that is
    symmetric about 0 does not round-trip."""

    input_shape = (2,)
    data_range = (-1.0, 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.clone(), torch.zeros(len(x))

    def inverse(self, z: Tensor) -> Tensor:
        return torch.where(z[:, :1] > 0, torch.full_like(z, float("nan")), z)


class LogDetOffByOne(ExactLinear):
    """An exact linear map that reports ``log|det W| + 1``: every log-det is off by exactly 1."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, log_det = super().forward(x)
        return z, log_det + 1.0


def test_sampling_counts_the_prior_draws_whose_inverse_is_nan() -> None:
    # even batch indices are NaN, so with batches of 50 exactly half of the draws fail
    report = innaudit.audit(
        NanHalfLinear(), data=torch.rand(10, 4), ood=[], audits=["sampling"], samples=200, batch_size=50
    )
    for result in report.audit("sampling").results:
        assert result.metrics["sample_nonfinite_fraction"] == 0.5
        assert result.status is Status.FAIL
    assert report.exit_code is innaudit.ExitCode.GATE_FAILED


def test_logdet_finds_a_log_det_off_by_one() -> None:
    report = innaudit.audit(LogDetOffByOne(), data=torch.rand(40, 4), ood=[], audits=["logdet"])
    result = report.result("logdet", "data")
    assert abs(result.metrics["error"]["max"] - 1.0) < 1e-4
    assert abs(result.metrics["error"]["median"] - 1.0) < 1e-4
    assert result.status is Status.FAIL


def test_grid_maps_the_half_plane_where_the_inverse_is_nan() -> None:
    report = innaudit.audit(
        HalfPlaneNaN(), data=torch.rand(8, 2), ood=[], audits=["grid"], config={"grid": {"resolution": 16}}
    )
    (result,) = report.audit("grid").results
    assert result.metrics["n"] == 256 and result.metrics["nonfinite_fraction"] == 0.5
