"""The repair in words: the plan, what each remedy changed and whether the re-audit says it
fixed its failure, the price, what still fails. Plain lines; the CLI prints them."""

from __future__ import annotations

import math

from innaudit.remedies.plan import Plan
from innaudit.remedies.price import ACCURACY, Price
from innaudit.remedies.result import RepairResult, RepairStatus

__all__ = ["describe", "describe_plan", "verdict_line"]

WHAT = {
    "bounded-scale": "bounded scale",
    "fd": "FD fine-tune",
    "nf": "NF objective",
    "precision": "float64 inverse",
}


def describe_plan(plan: Plan) -> list[str]:
    """The remedies the evidence called for, chosen or not, and why."""
    if plan.passed:
        return ["plan: the audit passes; nothing to repair"]
    lines = ["plan:"]
    if plan.blocker is not None:
        lines.append(f"  no remedy applies: {plan.blocker.why}")
    for choice in plan.choices:
        mark = "apply" if choice.chosen and plan.blocker is None else "skip "
        lines.append(f"  {mark} {WHAT[choice.remedy]}: {choice.finding.why}")
        if choice.not_applicable:
            lines.append(f"        not applicable: {choice.not_applicable}")
    if not plan.choices and plan.blocker is None:
        lines.append("  no remedy applies: no rule covers the failures in this report")
    elif plan.choices and not plan.chosen and plan.blocker is None:
        lines.append("  no remedy applies: every remedy called for is not applicable to this model")
    return lines


def _figure(metric: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:.2f} %" if metric == ACCURACY else f"{value:.4f}"


def _price(price: Price) -> str:
    unit = "test accuracy" if price.metric == ACCURACY else "test NLL (bits/dim)"
    steps = [_figure(price.metric, price.before)]
    if price.after_remedies is not None:
        steps.append(f"{_figure(price.metric, price.after_remedies)} (remedies, before the fine-tune)")
    steps.append(_figure(price.metric, price.after))
    change = price.change
    delta = (
        ""
        if change is None or math.isnan(change)
        else f", change {change:+.4f}"
        if price.metric != ACCURACY
        else f", change {100 * change:+.2f} points"
    )
    return f"price: {unit} {' -> '.join(steps)}{delta}, on {price.heldout} ({price.n} samples)"


def describe(result: RepairResult) -> list[str]:
    """Every line of the repair's account (see the module docstring)."""
    lines = describe_plan(result.plan)
    for remedy in result.remedies:
        outcome = remedy.outcome.value if remedy.outcome is not None else "applied"
        lines.append(f"remedy {WHAT[remedy.remedy]}: {outcome}: {remedy.changes}")
    if result.fine_tune is not None:
        tuned = result.fine_tune
        lines.append(
            f"fine-tune: {tuned['steps_done']} of {tuned['steps']} steps ({tuned['objective']}, lr {tuned['lr']:g}, "
            f"batch {tuned['batch_size']}), {tuned['skipped_nonfinite']} skipped as non-finite"
        )
    if result.price is not None:
        lines.append(_price(result.price))
    lines += [f"note: {note}" for note in result.notes]
    if result.status in (RepairStatus.REPAIRED, RepairStatus.NOT_FIXED):
        failing = result.still_failing
        lines.append("still failing: " + ("none" if not failing else f"{len(failing)} check(s)"))
        lines += [f"  {item}" for item in failing[:20]]
        if len(failing) > 20:
            lines.append(f"  +{len(failing) - 20} more")
    if result.output is not None:
        lines.append(f"wrote {result.output} ({result.checkpoint_kind}); load it with: {result.load_hint}")
    return lines


def verdict_line(result: RepairResult) -> str:
    """``innaudit repair: repaired (exit 0) in 42 s``."""
    return f"innaudit repair: {result.status.value} (exit {int(result.exit_code)}) in {result.wall_s:.0f} s"
