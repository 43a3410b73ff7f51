"""Training recipes that make the demo checkpoints (``innaudit train RECIPE``)."""

from __future__ import annotations

from .recipes import RECIPES, Recipe, TrainedModel, run_recipe

__all__ = ["RECIPES", "Recipe", "TrainedModel", "run_recipe"]
