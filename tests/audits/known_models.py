"""Known-answer models whose failure regions are known in closed form."""

from __future__ import annotations

from innaudit.core.domain import DataDomain
from innaudit.loading.adapt import adapt_module
from innaudit.model.contract import InvertibleModel

from .cli_models import Scaling, UnderflowCoupling

__all__ = ["Scaling", "UnderflowCoupling", "scaling_model", "underflow_model"]


def underflow_model() -> InvertibleModel:
    """The UnderflowCoupling as an InvertibleModel on the unit square."""
    return adapt_module(UnderflowCoupling(), DataDomain(shape=(2,), low=0.0, high=1.0), {"test": "underflow"})


def scaling_model(scales: list[float]) -> InvertibleModel:
    """A diagonal linear map on ``[0, 1]^d``."""
    return adapt_module(Scaling(scales), DataDomain(shape=(len(scales),)), {"test": "scaling"})
