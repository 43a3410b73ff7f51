"""Paper-reproduction recipes: registry, short deterministic runs, residual metadata in audits."""

from __future__ import annotations

import math

import torch

import innaudit
from innaudit import zoo
from innaudit.core.domain import DataDomain
from innaudit.loading.adapt import adapt_module
from innaudit.loading.native import checkpoint_bytes
from innaudit.train import RECIPES, run_recipe

NEW = (
    "checkerboard-affine",
    "checkerboard-additive",
    "checkerboard-residual",
    "digits-affine-fd",
    "digits-residual",
    "regression2d-affine",
    "regression2d-affine-nf",
    *(f"digits-classifier-{c}{r}" for c in ("additive", "affine") for r in ("", "-fd", "-nf", "-ms")),
)


def test_every_paper_recipe_is_registered_and_described() -> None:
    assert set(NEW) <= set(RECIPES)
    assert all(RECIPES[name].description for name in NEW)


def test_a_short_residual_run_is_bitwise_deterministic_and_calibrated() -> None:
    first = run_recipe("checkerboard-residual", seed=2, steps=3)
    second = run_recipe("checkerboard-residual", seed=2, steps=3)
    assert checkpoint_bytes(
        first.module, first.architecture, first.config, first.domain, first.provenance
    ) == checkpoint_bytes(second.module, second.architecture, second.config, second.domain, second.provenance)
    assert first.domain.name == "checkerboard" and first.provenance["regularizer"] == "none"
    forward, inverse = first.module.lipschitz_bounds()
    assert 1 <= forward < math.inf and 1 <= inverse < math.inf
    for block in first.module.residual_blocks():
        assert block.lipschitz_coefficient() <= 0.8**3 + 1e-6


def test_a_short_regularized_classifier_run_records_accuracy_and_regularizer() -> None:
    trained = run_recipe("digits-classifier-affine-fd", seed=0, steps=2)
    prov = trained.provenance
    assert prov["regularizer"] == "fd" and prov["fd_coeff"] == 1e-4 and prov["objective"] == "ce"
    assert 0.0 <= prov["test_accuracy"] <= 1.0
    logits = trained.module.classify(torch.rand(3, 1, 8, 8))
    assert logits.shape == (3, 10)


def test_roundtrip_reports_the_capped_fixed_point_solves() -> None:
    module = zoo.build("residual-vector", {"shape": [2], "blocks": 2, "max_iter": 2})
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1000.0)
    module.calibrate()
    model = adapt_module(module, DataDomain((2,), -4, 4, None, "checkerboard"), {})
    report = innaudit.audit(
        model, data="checkerboard", ood=["grid:-8,8,10"], config={"audits": ["roundtrip"], "samples": 100}
    )
    (result,) = report.audits
    hits = {r.dataset: r.metrics["inverse_cap_hits"] for r in result.results}
    assert hits["checkerboard"] > 0 and hits["grid:-8,8,10"] > 0


def test_cli_regularizer_flag_names_the_regularized_recipe(run_cli) -> None:
    result = run_cli("train", "digits-affine", "--regularizer", "nf", "-o", "/tmp/never.pt")
    assert result.code == 2
    assert "digits-affine-nf" in result.stderr and len(result.stderr_lines) == 1
