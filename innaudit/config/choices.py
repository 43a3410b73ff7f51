"""The closed vocabularies of run options, kept below the audits so the CLI lists them without torch.

The precision and gradient audits import their names from here (the precision audit holds its
table of dtypes against :data:`PRECISION_NAMES` when it is imported), the config refuses any
other value when it is read, and ``innaudit run --help`` shows the same lists: one definition,
three readers.
"""

from __future__ import annotations

from innaudit.core.errors import ConfigError, did_you_mean, short_repr

__all__ = ["FAIL_ON", "GRADIENT_LOSSES", "PRECISION_NAMES", "check_choice"]

FAIL_ON = ("warn", "fail")
"""``fail_on``: the least severe status that fails the gate."""

PRECISION_NAMES = ("float64", "float32", "float16", "bfloat16", "autocast_float16", "autocast_bfloat16")
"""Every precision the precision audit measures, in report order (``precision.required``)."""

GRADIENT_LOSSES = ("auto", "nll", "projection", "model")
"""The gradient audit's losses (``gradient.loss``): the model's own, the NLL, a fixed projection."""


def check_choice(where: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse a ``value`` of option ``where`` outside ``allowed`` (one line, with a "did you mean")."""
    if value not in allowed:
        raise ConfigError(f"{where} is {short_repr(value)}{did_you_mean(str(value), allowed)}")
