r"""Trend rules: what turns a sequence of monitor checks into findings.

A threshold on one check says how bad the model is now; training needs to know when it started to
go wrong. Three rules compare each check with the previous ones (Behrmann et al., "Understanding
and Mitigating Exploding Inverses in Invertible Neural Networks", AISTATS 2021,
https://arxiv.org/abs/2006.09347, section 2: ``Lip(F^-1) = 1 / sigma_min(J_F)`` multiplies float32
rounding of the latent, so a collapsing ``sigma_min`` precedes a failed round trip):

- ``sigma_min_drop`` (warn): on any set, ``sigma_min(J_F)`` (smallest over the spectrum samples)
  fell by more than ``drop_factor`` since the previous check: ``prev / cur > drop_factor``. The
  inverse's local Lipschitz constant grew by that factor within one interval.
- ``nonfinite`` (fail): a set's round trip has NaN or Inf samples. The finding marks the first
  check where the set turned non-finite; later checks where it stays non-finite keep the fail
  status with ``first = False``.
- ``data_error`` (warn): the worst relative round-trip error on the in-distribution set left float32
  rounding: ``rel_error > data_tolerance`` (default ``1e-4``, about 1000 float32 epsilons, the
  ``roundtrip`` audit's warn level). A non-finite data round trip is already a ``nonfinite`` fail.

Reading a finding: a ``sigma_min_drop`` with finite round trips is the early warning; the first
``nonfinite`` on an OOD set is the paper's exploding inverse off the data; a ``data_error`` means the
model no longer inverts the data it is trained on to float32 precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from innaudit.core.metrics import percent
from innaudit.core.results import Status
from innaudit.monitor.battery import SetFigures

__all__ = ["Finding", "TrendRules"]


@dataclass(frozen=True)
class Finding:
    """One rule firing at one check.

    Attributes:
        rule: ``sigma_min_drop``, ``nonfinite``, ``data_error`` or ``error`` (an audit crashed).
        dataset: the set it concerns ("" for the whole check).
        status: ``warn`` or ``fail`` (``error`` for a crashed audit).
        message: one sentence with the numbers.
        first: True the first time this rule fires on this set.
    """

    rule: str
    dataset: str
    status: Status
    message: str
    first: bool = True

    def to_dict(self) -> dict[str, object]:
        """Plain data for the JSONL log."""
        return {
            "rule": self.rule,
            "dataset": self.dataset,
            "status": self.status.value,
            "message": self.message,
            "first": self.first,
        }


@dataclass(frozen=True)
class TrendRules:
    """The rules' settings.

    Attributes:
        drop_factor: ``sigma_min`` falling by more than this factor between two checks warns.
        data_tolerance: a relative round-trip error on the data above this warns.
    """

    drop_factor: float = 10.0
    data_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if not self.drop_factor > 1.0:
            raise ValueError(f"drop_factor {self.drop_factor} must be above 1; a factor of fall")
        if not self.data_tolerance > 0.0:
            raise ValueError(f"data_tolerance {self.data_tolerance} must be positive")

    def evaluate(
        self,
        step: int,
        current: Mapping[str, SetFigures],
        previous: Mapping[str, SetFigures] | None,
        fired: set[tuple[str, str]],
        data_set: str | None,
    ) -> list[Finding]:
        """The findings of one check; ``fired`` (rule, set) pairs seen before is updated in place."""
        found: list[Finding] = []
        for name, now in current.items():
            before = previous.get(name) if previous else None
            found += self._drop(step, name, now, before, fired)
            if now.nonfinite > 0:
                found.append(
                    _once(
                        fired,
                        "nonfinite",
                        name,
                        Status.FAIL,
                        f"{name}: {percent(now.nonfinite)} of round trips are NaN/Inf at step {step}",
                    )
                )
            if name == data_set and math.isfinite(now.rel_error) and now.rel_error > self.data_tolerance:
                found.append(
                    _once(
                        fired,
                        "data_error",
                        name,
                        Status.WARN,
                        f"{name}: round-trip error {now.rel_error:.3g} left float32 rounding "
                        f"(> {self.data_tolerance:g}) at step {step}",
                    )
                )
        return found

    def _drop(
        self, step: int, name: str, now: SetFigures, before: SetFigures | None, fired: set[tuple[str, str]]
    ) -> list[Finding]:
        if before is None or not (before.sigma_min > 0 and math.isfinite(before.sigma_min)):
            return []
        if not (math.isfinite(now.sigma_min) and now.sigma_min >= 0):
            return []  # a non-finite Jacobian shows in the round trip; no ratio to take
        ratio = before.sigma_min / now.sigma_min if now.sigma_min > 0 else math.inf
        if ratio <= self.drop_factor:
            return []
        return [
            _once(
                fired,
                "sigma_min_drop",
                name,
                Status.WARN,
                f"{name}: sigma_min(J_F) fell {ratio:.3g}x in one interval, "
                f"{before.sigma_min:.3g} -> {now.sigma_min:.3g} at step {step}",
            )
        ]


def _once(fired: set[tuple[str, str]], rule: str, name: str, status: Status, message: str) -> Finding:
    first = (rule, name) not in fired
    fired.add((rule, name))
    return Finding(rule, name, status, message, first)
