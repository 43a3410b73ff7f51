"""The words of the diagnosis: what a gated metric says when it decides a set's status.

Each statement of :mod:`innaudit.verdict.diagnosis` that explains a failing or warning set is
built here from the checks that decided it, and from nothing else: the value of each check,
the limit it crossed and the set's sample count ``n``, so no statement can print a figure the
report does not hold. :data:`PHRASES` words the metrics of the registered audits; a metric not
listed (a new audit's) is worded by its declaration's doc, else by its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from innaudit.core.metrics import Direction, MetricTable, declared, percent
from innaudit.core.results import Check, SetResult, Status

__all__ = ["PHRASES", "Failing", "figure", "limit_words", "part", "role_of", "what"]

PHRASES: Mapping[tuple[str, str], str] = {
    ("roundtrip", "nonfinite_fraction"): "round trips non-finite",
    ("roundtrip", "rel_error_l2.max"): "max relative round-trip error",
    ("sampling", "nonfinite_fraction"): "round trips of its samples non-finite",
    ("sampling", "rel_error_l2.max"): "max relative round-trip error of its samples",
    ("precision", "required.nonfinite_fraction"): "round trips non-finite at the required precision",
    ("precision", "required.rel_error_l2.max"): "max relative round-trip error at the required precision",
    ("attack", "nonfinite_fraction"): "searched points with a non-finite round trip in their ball",
    ("attack", "fraction_above_threshold"): "searched points with an error above the attack threshold",
    ("attack", "rel_error_l2.max"): "largest relative round-trip error the search found",
    ("spectrum", "singular_fraction"): "samples whose Jacobian J_F is singular to the model's precision",
    ("spectrum", "nonfinite_fraction"): "samples with a non-finite Jacobian",
    ("spectrum", "condition.max"): "largest condition number of J_F",
    ("spectrum", "cross_check.mismatch_fraction"): "samples whose J_F and J_F^-1 spectra disagree",
    ("layers", "nonfinite_fraction"): "traced samples non-finite in some block",
    ("layers", "block_rel_error.max"): "largest per-block relative round-trip error",
    ("layers", "chain_rel_error.max"): "largest accumulated relative error of the inverse chain from z",
    ("logdet", "nonfinite_fraction"): "samples with a non-finite log-det",
    ("logdet", "rel_error.max"): "largest relative error of the model's log-det against log|det J|",
    ("logdet", "reference_failed_fraction"): (
        "samples whose reference log|det J| innaudit could not compute (innaudit's failure, not the model's)"
    ),
    ("gradient", "nonfinite_fraction"): "batches with a non-finite memory-saving gradient",
    ("gradient", "rel_error_l2.max"): "largest relative error of the memory-saving gradient",
    ("gradient", "stateful_layers"): "layers whose state changes on a re-run",
    ("bounds", "violation_fraction"): "samples whose measured Lipschitz constant exceeds the certified bound",
}
"""``(audit, metric) -> what the metric counts or measures``, as a noun phrase."""


@dataclass(frozen=True)
class Failing:
    """One check that decided a set's status: the set, the check, and whether it is a rate."""

    result: SetResult
    check: Check
    rate: bool

    @property
    def n(self) -> int | None:
        """The set's sample count, when it has one."""
        value = self.result.metrics.get("n")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def what(audit: str, metric: str, table: MetricTable | None) -> str:
    """The noun phrase of a metric: :data:`PHRASES`, else its declaration's doc, else its path."""
    if (audit, metric) in PHRASES:
        return PHRASES[(audit, metric)]
    found = declared(table or {}, audit, metric)
    head, _, stat = metric.rpartition(".")
    doc = found.doc if found is not None and found.doc else ""
    if doc and stat in ("max", "min", "median", "p99", "mean") and head:
        return f"{stat} {doc}"
    return doc or metric


def figure(value: float, rate: bool) -> str:
    """A check's value as the statement prints it: a share as ``24.0 %``, a number in 3 digits."""
    if math.isnan(value):
        return "nan (could not be computed)"
    return percent(value) if rate else f"{value:.3g}"


def limit_words(check: Check, rate: bool) -> str:
    """``limit 0.01`` / ``warns above 0.0001`` / ``minimum 0.9``: the bound the check crossed."""
    bound = check.fail if check.status is Status.FAIL else check.warn
    if bound is None:
        bound = check.warn if check.status is Status.FAIL else check.fail
    if bound is None:
        return "a NaN fails"
    shown = percent(bound, exact=True) if rate else f"{bound:.3g}"
    higher_better = check.direction is Direction.HIGHER_BETTER
    if check.status is Status.WARN:
        return f"warns {'below' if higher_better else 'above'} {shown}"
    return f"{'minimum' if higher_better else 'limit'} {shown}"


def part(phrase: str, failing: Sequence[Failing]) -> str:
    """One metric across the sets it decided: ``round trips non-finite on uniform 24.0 %,
    gaussian 97.7 % (of 300 each; limit 0 %)`` or ``max relative round-trip error 0.47 on
    uniform (limit 0.01)``; sets where it could not be computed (NaN) are named apart."""
    known = [f for f in failing if not math.isnan(f.check.value)]
    unknown = [f for f in failing if math.isnan(f.check.value)]
    pieces = [_known(phrase, known)] if known else []
    if unknown:
        names = ", ".join(f.result.dataset for f in unknown)
        pieces.append(f"{phrase} could not be computed on {names} (a NaN fails)")
    return "; ".join(pieces)


def _known(phrase: str, failing: Sequence[Failing]) -> str:
    first = failing[0]
    limit = "; ".join(sorted({limit_words(f.check, f.rate) for f in failing}))
    if first.rate:
        counts = {f.n for f in failing}
        if len(counts) == 1 and None not in counts:
            shown = ", ".join(f"{f.result.dataset} {figure(f.check.value, True)}" for f in failing)
            each = " each" if len(failing) > 1 else ""
            return f"{phrase} on {shown} (of {first.n}{each}; {limit})"
        shown = ", ".join(
            f"{f.result.dataset} {figure(f.check.value, True)}" + (f" of {f.n}" if f.n is not None else "")
            for f in failing
        )
        return f"{phrase} on {shown} ({limit})"
    shown = ", ".join(f"{figure(f.check.value, False)} on {f.result.dataset}" for f in failing)
    return f"{phrase} {shown} ({limit})"


def role_of(dataset: str, roles: Mapping[str, str]) -> str:
    """The set's role in the run: ``in-distribution``, ``ood``, ``samples`` (prior draws)."""
    role = roles.get(dataset) or ""
    if not role and dataset.startswith("prior@"):
        return "samples"
    return role
