"""The repair plan: the rules' findings on a report, held against what each remedy can act on.

A remedy is chosen when a rule calls for it (:mod:`innaudit.remedies.rules`) *and* it can act on
this model: the bounded scale needs affine couplings with an unbounded scale it knows how to
bound, FD a known training objective, NF a supervised INN, precision the blocks of a native
model. A remedy called for but not applicable stays in the plan with the reason, so ``--plan``
says what the evidence asked for and why nothing was done about it. The blocker
(:func:`~innaudit.remedies.rules.wrong_inverse`) empties the plan: no remedy applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from innaudit.core.results import ExitCode, Report
from innaudit.model.contract import InvertibleModel
from innaudit.remedies import fd, nf, precision
from innaudit.remedies.bounded_scale import ScaleTarget, scale_targets
from innaudit.remedies.evidence import Evidence, ReportView
from innaudit.remedies.objective import Objective
from innaudit.remedies.rules import (
    BOUNDED_SCALE,
    COLLAPSED,
    FD,
    NF,
    PRECISION,
    REMEDY_RULES,
    Finding,
    wrong_inverse,
)

__all__ = ["Choice", "Plan", "make_plan"]


@dataclass(frozen=True)
class Choice:
    """One remedy the evidence called for, and whether it can act on this model."""

    finding: Finding
    not_applicable: str = ""
    """Why the remedy cannot act on this model (empty: it is chosen)."""

    @property
    def remedy(self) -> str:
        """The remedy's id."""
        return self.finding.remedy

    @property
    def chosen(self) -> bool:
        """Whether the repair applies it."""
        return not self.not_applicable

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {**self.finding.to_dict(), "chosen": self.chosen, "not_applicable": self.not_applicable}


@dataclass(frozen=True)
class Plan:
    """Every remedy called for, the blocker if any, and the scale targets found."""

    choices: tuple[Choice, ...]
    blocker: Finding | None = None
    passed: bool = False
    """True when the audit passed: there is nothing to repair."""
    targets: tuple[ScaleTarget, ...] = field(default=())

    @property
    def chosen(self) -> tuple[str, ...]:
        """The ids of the remedies the repair applies, in order (each once: two rules may call
        for the same remedy)."""
        if self.blocker is not None:
            return ()
        return tuple(dict.fromkeys(c.remedy for c in self.choices if c.chosen))

    @property
    def floored(self) -> bool:
        """Whether the bounded scale is floored: :func:`~innaudit.remedies.rules.collapsed_scale` chose it."""
        return BOUNDED_SCALE in self.chosen and any(c.chosen and c.finding.rule == COLLAPSED for c in self.choices)

    def evidence(self, remedy: str) -> tuple[Evidence, ...]:
        """The evidence of every chosen rule that called for ``remedy``."""
        return tuple(e for c in self.choices if c.remedy == remedy and c.chosen for e in c.finding.evidence)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {
            "passed": self.passed,
            "blocker": self.blocker.to_dict() if self.blocker is not None else None,
            "choices": [c.to_dict() for c in self.choices],
            "chosen": list(self.chosen),
        }


def _not_applicable(
    remedy: str, model: InvertibleModel, objective: Objective, native: bool, targets: list[ScaleTarget]
) -> str:
    if remedy == BOUNDED_SCALE:
        return (
            ""
            if targets
            else (
                "no affine coupling with an unbounded scale that innaudit can bound (a zoo Coupling or a "
                "normflows AffineCoupling with an exp or sigmoid scale): bound the scale in the architecture "
                "(FrEIA: a smaller clamp) or use additive coupling"
            )
        )
    if remedy == FD:
        return fd.applicable(objective) or ""
    if remedy == NF:
        return nf.applicable(objective) or ""
    if remedy == PRECISION:
        return precision.applicable(model, native) or ""
    raise ValueError(f"no remedy {remedy!r}")


def make_plan(report: Report, model: InvertibleModel, objective: Objective, native: bool) -> Plan:
    """The plan for ``model`` from its audit ``report`` (see the module docstring)."""
    view = ReportView(report)
    if report.exit_code is ExitCode.OK:
        return Plan((), None, passed=True)
    targets = scale_targets(model.module)
    findings = [f for rule in REMEDY_RULES if (f := rule(view)) is not None]
    choices = tuple(Choice(f, _not_applicable(f.remedy, model, objective, native, targets)) for f in findings)
    return Plan(choices, wrong_inverse(view), targets=tuple(targets))
