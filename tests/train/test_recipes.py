"""Training recipes: registry, error messages, determinism (a handful of steps only)."""

from __future__ import annotations

import pytest
import torch

from innaudit import zoo
from innaudit.core.errors import UsageError
from innaudit.data.digits import DIGITS_DOMAIN
from innaudit.train import RECIPES, TrainedModel, run_recipe


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="digits-additive, digits-affine"):
        run_recipe("no-such-recipe")


def test_recipes_describe_themselves() -> None:
    assert {"digits-affine", "digits-additive"} <= set(RECIPES)
    assert all(recipe.name == name and recipe.description for name, recipe in RECIPES.items())


def test_a_short_run_is_deterministic_and_rebuildable() -> None:
    calls: list[tuple[int, int]] = []
    first = run_recipe("digits-additive", seed=3, progress=lambda s, t: calls.append((s, t)), steps=3)
    second = run_recipe("digits-additive", seed=3, steps=3)
    assert isinstance(first, TrainedModel)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert first.domain == DIGITS_DOMAIN and first.architecture == "coupling-image"
    assert first.config["seed"] == 3 and first.config["coupling"] == "additive"
    assert first.provenance["recipe"] == "digits-additive" and first.provenance["steps"] == 3
    for key in ("train_nll_bits_per_dim", "test_nll_bits_per_dim", "torch"):
        assert key in first.provenance
    assert first.provenance == second.provenance, "no wall time: a rebuild must hash the same"
    a, b = first.module.state_dict(), second.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rebuilt = zoo.build(first.architecture, first.config)
    rebuilt.load_state_dict(a)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x)[0], first.module(x)[0])


def test_the_affine_recipes_use_unbounded_inverse_scales() -> None:
    trained = run_recipe("digits-affine", seed=0, steps=1)
    assert trained.config["coupling"] == "affine" and trained.config["scale"] == "exp"
    assert RECIPES["digits-affine-sigmoid"].description
