"""Known answers for the round-trip and sampling audits."""

from __future__ import annotations

import numpy as np
import pytest

from innaudit.api import audit
from innaudit.core.results import ExitCode, Status

from .known_models import scaling_model, underflow_model


def _by_set(report, audit_id: str) -> dict:
    (result,) = [a for a in report.audits if a.id == audit_id]
    return {r.dataset: r for r in result.results}


def test_underflow_region_is_found_exactly_where_it_is() -> None:
    report = audit(
        underflow_model(),
        data="constant:0.1",
        ood=["far=constant:0.9", "uniform"],
        config={"samples": 4000, "audits": ["roundtrip"]},
    )
    sets = _by_set(report, "roundtrip")
    assert sets["constant:0.1"].status is Status.PASS
    assert sets["constant:0.1"].metrics["nonfinite_fraction"] == 0.0
    assert sets["far"].metrics["nonfinite_fraction"] == 1.0
    assert sets["far"].metrics["latent_nonfinite_fraction"] == 0.0, "z is finite (zero); x' is 0/0"
    assert sets["far"].metrics["nan_fraction"] == 1.0
    share = sets["uniform"].metrics["nonfinite_fraction"]
    # x1 ~ U(0.01, 0.99); the boundary lies between 0.44 and 0.53
    assert 0.45 < share < 0.57
    assert report.exit_code is ExitCode.GATE_FAILED


def test_float64_check_separates_precision_from_breakdown() -> None:
    report = audit(
        underflow_model(),
        data="constant:0.1",
        ood=["mid=constant:0.49"],
        config={"samples": 10, "audits": ["roundtrip"], "float64_check": True},
    )
    mid = _by_set(report, "roundtrip")["mid"]
    # sigmoid(-98) = 2.7e-43 is subnormal in float32: y2 underflows, so x' is 0/s or worse.
    assert mid.metrics["float64"]["nonfinite_fraction"] == 0.0
    assert mid.metrics["float64"]["rel_error_l2"]["max"] < 1e-12
    assert mid.status is Status.FAIL


def test_exact_linear_map_round_trips_to_rounding() -> None:
    report = audit(
        scaling_model([1e-3, 1.0, 1e2]),
        data="uniform",
        ood=["gaussian"],
        config={"samples": 1000, "audits": ["roundtrip", "sampling"]},
    )
    for audit_result in report.audits:
        for r in audit_result.results:
            assert r.metrics["nonfinite_fraction"] == 0.0
            assert r.metrics["rel_error_l2"]["max"] < 1e-6
    assert report.exit_code is ExitCode.OK


def test_same_seed_same_metrics_other_seed_other_draws() -> None:
    def metrics(seed: int) -> list:
        report = audit(scaling_model([0.5, 2.0]), data="gaussian", config={"samples": 300, "seed": seed})
        return [(r.dataset, r.metrics) for a in report.audits for r in a.results]

    assert metrics(3) == metrics(3)
    assert metrics(3) != metrics(4)


def test_sampling_reports_each_temperature() -> None:
    report = audit(
        scaling_model([0.5, 2.0]),
        config={"samples": 200, "audits": ["sampling"], "sampling": {"temperatures": [1.0, 0.5, 2.0]}},
    )
    sets = _by_set(report, "sampling")
    assert list(sets) == ["prior@T=1", "prior@T=0.5", "prior@T=2"]
    assert all(r.metrics["n"] == 200 and r.metrics["nonfinite_fraction"] == 0.0 for r in sets.values())


@pytest.mark.parametrize("batch_size", [7, 64])
def test_metrics_match_a_by_hand_computation(batch_size: int) -> None:
    model = underflow_model()
    report = audit(
        model,
        data="uniform",
        ood=["gaussian"],
        config={"samples": 500, "batch_size": batch_size, "audits": ["roundtrip"]},
    )
    from innaudit.data import Role, resolve_dataset

    ds = resolve_dataset("uniform", Role.IN_DISTRIBUTION, model.info.domain, 500, 0)
    x = np.concatenate([b.numpy() for b in ds.batches(batch_size)])
    import torch

    back = model.inverse(model.forward(torch.from_numpy(x))).numpy()
    err = np.linalg.norm((back - x).astype(np.float64), axis=1)
    finite = err[np.isfinite(err)]
    got = _by_set(report, "roundtrip")["uniform"].metrics
    assert got["nonfinite_fraction"] == pytest.approx(1 - len(finite) / len(err))
    assert got["error_l2"]["max"] == pytest.approx(finite.max(), rel=1e-6)
    assert got["error_l2"]["median"] == pytest.approx(np.median(finite), rel=1e-6)
