"""The ``patches-tarflow`` recipes: registered, deterministic, and the twins differ only where
the issue says (scale guard and learning rate)."""

from __future__ import annotations

import pytest
import torch

from innaudit import zoo
from innaudit.train import RECIPES, run_recipe
from innaudit.train.tarflow_recipe import STABLE, UNSTABLE


def test_both_recipes_are_registered_and_differ_only_in_the_guard_and_rate() -> None:
    assert {"patches-tarflow", "patches-tarflow-unstable"} <= set(RECIPES)
    assert (STABLE.config["scale"], STABLE.config["soft_clip"]) == ("softplus", 4.0)
    assert (UNSTABLE.config["scale"], UNSTABLE.config["soft_clip"]) == ("exp", 0.0)
    assert UNSTABLE.lr == 5 * STABLE.lr
    rest = {k: v for k, v in STABLE.config.items() if k not in ("scale", "soft_clip")}
    assert rest == {k: v for k, v in UNSTABLE.config.items() if k not in ("scale", "soft_clip")}


@pytest.mark.slow
def test_a_short_run_is_bitwise_deterministic_and_rebuildable() -> None:
    pytest.importorskip("skimage")
    first, second = (run_recipe("patches-tarflow-unstable", seed=3, steps=2) for _ in range(2))
    assert first.architecture == "tarflow" and first.config["seed"] == 3
    assert first.provenance == second.provenance
    assert first.provenance["steps"] == 2 and first.provenance["skipped_nonfinite_steps"] == 0
    a, b = first.module.state_dict(), second.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rebuilt = zoo.build(first.architecture, first.config)
    rebuilt.load_state_dict(a)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rebuilt(x)[0], first.module(x)[0])
