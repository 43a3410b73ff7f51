"""Properties over the whole audit registry: every metric an audit produces is declared (with a
direction), every declaration is produced by some run, and the run order lists every audit."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

import innaudit
from innaudit.audits import REGISTRY, RUN_ORDER, metric_table
from innaudit.core.metrics import Direction, covers
from innaudit.core.results import leaves
from innaudit.run.plan import PlanRun

from ..multiscale import normflows_glow

# Small budgets; between them the runs make every audit produce every metric it can: the 2-D
# residual flow (grid, certified bounds, iterative inverse), the digits residual flow (estimated
# log-det) and the affine coupling flow on digits (coupling scales; Lanczos forced).
_SMALL = {
    "samples": 16,
    "float64_check": True,
    "ood": ["uniform"],
    "attack": {"samples": 2, "steps": 3},
    "spectrum": {"samples": 2},
    "bounds": {"samples": 2},
    "grid": {"resolution": 6},
}
_RUNS = (
    ("checkpoints/checkerboard-residual.pt", {}),
    ("checkpoints/digits-residual.pt", {"audits": ["logdet"]}),
    (
        "checkpoints/digits-affine.pt",
        {
            "audits": ["layers", "spectrum", "bounds", "logdet"],
            "spectrum": {"samples": 2, "method": "matrix-free"},
            # against an estimated reference: the raw gap beside the provable excess
            "logdet": {"samples": 2, "method": "matrix-free", "probes": 2, "steps": 8},
        },
    ),
    # memcnn-style wrappers: the gradient audit's library_* metrics
    ("tests/audits/gradient_models.py:memcnn_like", {"audits": ["gradient"], "data": "gaussian"}),
    # a linear map that float16 and bfloat16 can run: every precision's metrics
    ("tests/audits/precision_models.py:conditioned_linear", {"audits": ["precision"], "data": "gaussian"}),
    # autoregressive token blocks inverted by capped Jacobi sweeps: every tokens metric
    (
        "tests/audits/tarflow_models.py:jacobi_capped",
        {"audits": ["tokens"], "data": "gaussian", "tokens": {"isolate": True}},
    ),
    (
        "tests/audits/tarflow_models.py:plain",
        {"audits": ["tokens"], "data": "gaussian", "tokens": {"autocast": "float16"}},
    ),
)


@pytest.fixture(scope="module")
def produced() -> dict[str, set[str]]:
    """Audit id -> every metric path (a number or a text such as a block name) any run produced."""
    found: dict[str, set[str]] = defaultdict(set)
    reports = [innaudit.audit(model, config={**_SMALL, **extra}) for model, extra in _RUNS]
    # a multi-scale latent (normflows' Glow): the per-level metrics of roundtrip and sampling
    x = torch.rand(6, *normflows_glow.SHAPE, generator=torch.Generator().manual_seed(0))
    reports.append(innaudit.audit(normflows_glow.build(), data=x, audits=["roundtrip", "sampling"], config=_SMALL))
    with pytest.MonkeyPatch.context() as patch:  # every deadline already passed: the budget's cut metrics
        patch.setattr(PlanRun, "_allowance", lambda self, audit_id: 0.0)
        cut = {
            **_SMALL,
            "audits": ["attack", "spectrum", "layers", "precision", "logdet"],
            "spectrum": {"samples": 2, "method": "matrix-free"},
            "layers": {"method": "matrix-free"},
            "precision": {"samples": 8},
            "logdet": {"samples": 4, "method": "matrix-free"},
            "budget": "10m",
        }
        reports.append(innaudit.audit("checkpoints/digits-affine.pt", config=cut))
    for report in reports:
        model = report.target.get("model")
        for audit in report.audits:
            assert audit.status is not innaudit.Status.ERROR, (model, audit.id, audit.message)
            for result in audit.results:
                found[audit.id] |= {
                    p for p, v in leaves(result.metrics) if isinstance(v, (int, float, str)) and not isinstance(v, bool)
                }
    return found


@pytest.mark.parametrize("audit_id", list(REGISTRY))
def test_declared_metrics_are_exactly_the_produced_ones(audit_id: str, produced: dict[str, set[str]]) -> None:
    declared = metric_table()[audit_id]
    assert produced[audit_id], f"{audit_id} produced nothing on the registry models"
    undeclared = sorted(p for p in produced[audit_id] if not any(covers(d, p) for d in declared))
    assert not undeclared, f"{audit_id} produces metrics it does not declare: {undeclared}"
    never = sorted(d for d in declared if not any(covers(d, p) for p in produced[audit_id]))
    assert not never, f"{audit_id} declares metrics no run produced: {never}"
    for metric in declared.values():
        assert isinstance(metric.direction, Direction)
        assert not metric.rate or metric.unit == "fraction", metric


def test_run_order_lists_every_registered_audit_once() -> None:
    assert sorted(RUN_ORDER) == sorted(REGISTRY) and len(set(RUN_ORDER)) == len(RUN_ORDER)
    assert list(REGISTRY) == list(RUN_ORDER)


def test_every_threshold_names_a_declared_metric() -> None:
    for audit_id, cls in REGISTRY.items():
        for path in cls.thresholds:
            assert any(covers(d, path) for d in metric_table()[audit_id]), (audit_id, path)
