"""Training recipes that make the demo checkpoints (``innaudit train RECIPE``), and the
stabilizing regularizers (:mod:`innaudit.train.regularizers`) for users' own training loops."""

from __future__ import annotations

from innaudit.train.recipes import RECIPES, Recipe, TrainedModel, run_recipe
from innaudit.train.regularizers import fd_regularizer, nf_regularizer

__all__ = ["RECIPES", "Recipe", "TrainedModel", "fd_regularizer", "nf_regularizer", "run_recipe"]
