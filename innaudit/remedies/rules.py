"""The repair rules: which remedy a report calls for, and on which numbers.

Each rule reads the report's structured metrics and statuses (:class:`~innaudit.remedies.evidence.ReportView`)
and returns a :class:`Finding` with the evidence, or None. A rule only says that the evidence
calls for a remedy; whether the remedy can act on this model is the remedy's question
(:mod:`innaudit.remedies.plan`), and whether it fixed anything is the re-audit's.

Behrmann et al., AISTATS 2021 (https://arxiv.org/abs/2006.09347) separate two kinds of failure,
and so do the rules:

- **global** (off the data): round trips of noise or of the model's own samples are non-finite
  or far off. An affine coupling has no global Lipschitz bound while ``1 / g`` is unbounded, so
  the remedy is structural: :func:`ood_explodes` calls for a bounded scale.
- **local** (on or near the data): the attack finds a non-finite point within half a bin, the
  memory-saving gradient is wrong, some data round trips break while the typical one is exact,
  the Jacobian on the data is ill-conditioned or singular. The paper's FD regularizer acts
  there (:func:`local_failure`), and for supervised INNs the NF objective with a small weight
  (:func:`supervised_collapse`).
- **precision**: float32 fails where float64 holds (:func:`float32_only`): run the failing
  blocks' inverse in float64.

One blocker: :func:`wrong_inverse`, an inverse that is off on the *typical* data sample (the
median round trip, also in float64 when measured). That is the code of ``F^-1``, not its
conditioning; no remedy that changes weights or precision can fix it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from innaudit.core.results import SetResult
from innaudit.remedies.evidence import DATA, MODEL_SAMPLES, OOD, Evidence, ReportView

__all__ = [
    "BOUNDED_SCALE",
    "COLLAPSED",
    "FD",
    "LOCAL_MEDIAN",
    "NF",
    "PRECISION",
    "REMEDY_RULES",
    "WRONG_MEDIAN",
    "Finding",
    "collapsed_scale",
    "float32_only",
    "local_failure",
    "ood_explodes",
    "supervised_collapse",
    "wrong_inverse",
]

BOUNDED_SCALE, FD, NF, PRECISION = "bounded-scale", "fd", "nf", "precision"
"""The remedies' ids, in the order they are applied."""

COLLAPSED = "collapsed_scale"
"""The rule whose bounded scale is floored (:func:`~innaudit.remedies.bounded_scale.floor_bound`)."""

LOCAL_MEDIAN = 1e-4
"""A data set whose median relative round-trip error is at most this (the ``roundtrip`` warn
level, about a thousand float32 roundings) is fine on the typical sample: its failures are
local."""

WRONG_MEDIAN = 1e-2
"""A median relative round-trip error on the data above this (the ``roundtrip`` fail level)
means the inverse is off on the typical sample: a wrong inverse, not an unstable one."""


@dataclass(frozen=True)
class Finding:
    """What one rule found: the remedy it calls for, why (one sentence), and the numbers."""

    remedy: str
    rule: str
    why: str
    evidence: tuple[Evidence, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {
            "remedy": self.remedy,
            "rule": self.rule,
            "why": self.why,
            "evidence": [e.to_dict() for e in self.evidence],
        }


def _cite(evidence: tuple[Evidence, ...], limit: int = 3) -> str:
    shown = [e.text for e in evidence[:limit]]
    return "; ".join(shown) + (f"; +{len(evidence) - limit} more" if len(evidence) > limit else "")


def _breaks(view: ReportView, audit: str, result: SetResult) -> list[Evidence]:
    """A round trip's non-finite share when above 0, else its largest relative error when
    that check failed; nothing when the set's round trips hold."""
    nonfinite = view.evidence(audit, result, "nonfinite_fraction")
    if nonfinite is not None and view.above(nonfinite.value, 0.0):
        return [nonfinite]
    if view.failed(result, "rel_error_l2"):
        return [e for e in [view.evidence(audit, result, "rel_error_l2.max")] if e is not None]
    return []


def _roundtrip_breaks(view: ReportView, audit: str, *roles: str) -> list[Evidence]:
    """:func:`_breaks` over the audit's sets of ``roles``."""
    return [e for result in view.sets(audit, *roles) for e in _breaks(view, audit, result)]


def _attack_nonfinite(view: ReportView) -> list[Evidence]:
    """The attack's non-finite share on the data, when above 0 (an overflow, not a large error)."""
    found = (view.evidence("attack", result, "nonfinite_fraction") for result in view.sets("attack", DATA))
    return [item for item in found if item is not None and view.above(item.value, 0.0)]


def ood_explodes(view: ReportView) -> Finding | None:
    """Round trips break off the data: on a held-out set (``roundtrip``) or on the model's own
    samples (``sampling``), non-finite or beyond the relative-error fail level; or the attack
    reaches a non-finite round trip near the data. A non-finite output within half a bin of a
    data point is the same overflow of an unbounded scale, reached closer to the data, and a
    bounded scale rules it out everywhere (the re-audit's attack checks that)."""
    evidence = tuple(
        _roundtrip_breaks(view, "roundtrip", OOD)
        + _roundtrip_breaks(view, "sampling", MODEL_SAMPLES)
        + _attack_nonfinite(view)
    )
    if not evidence:
        return None
    return Finding(
        BOUNDED_SCALE,
        "ood_explodes",
        f"round trips break off the data or turn non-finite near it ({_cite(evidence)}): a bounded "
        "coupling scale gives F^-1 a bound (1 / g < exp(c)) everywhere",
        evidence,
    )


def _first_above_zero(view: ReportView, audit: str, result: SetResult, paths: tuple[str, ...]) -> Evidence | None:
    """The evidence of the first of ``paths`` whose value is above 0, or None."""
    for path in paths:
        item = view.evidence(audit, result, path)
        if item is not None and view.above(item.value, 0.0):
            return item
    return None


def _attack(view: ReportView) -> list[Evidence]:
    paths = ("nonfinite_fraction", "fraction_above_threshold")
    found = (_first_above_zero(view, "attack", result, paths) for result in view.sets("attack", DATA))
    return [item for item in found if item is not None]


def _gradient(view: ReportView) -> list[Evidence]:
    found: list[Evidence] = []
    for result in view.sets("gradient"):
        found.extend(_breaks(view, "gradient", result))
    return found


def collapsed_scale(view: ReportView) -> Finding | None:
    """The memory-saving gradient is non-finite or beyond its error level: the inverse that
    rebuilds each block's input on the data is off, as when a coupling's scale ``g`` nears 0
    there. A bounded scale with a floor (``g >= 0.01``) bounds every coupling's ``1 / g``; the
    plan checks that the model has couplings it can bound, and the re-audit whether it helped."""
    evidence = tuple(_gradient(view))
    if not evidence:
        return None
    return Finding(
        BOUNDED_SCALE,
        COLLAPSED,
        f"the memory-saving gradient is wrong on the data ({_cite(evidence)}): a coupling scale near 0 there "
        "makes F^-1 amplify rounding; a bounded scale with a floor (g >= 0.01) bounds 1 / g in every coupling",
        evidence,
    )


def _data_roundtrip(view: ReportView) -> list[Evidence]:
    """Data round trips that break on some samples while the median one is fine."""
    found: list[Evidence] = []
    for result in view.sets("roundtrip", DATA):
        median = view.value(result, "rel_error_l2.median")
        if median is None or view.above(median, LOCAL_MEDIAN):
            continue
        found.extend(_breaks(view, "roundtrip", result))
    return found


def _data_spectrum(view: ReportView) -> list[Evidence]:
    """The Jacobian on the data: non-finite, singular, or beyond its condition-number levels."""
    found: list[Evidence] = []
    for result in view.sets("spectrum", DATA):
        item = _first_above_zero(view, "spectrum", result, ("nonfinite_fraction", "singular_fraction"))
        if item is not None:
            found.append(item)
        elif any(c.metric.startswith("condition") and c.status.rank >= 2 for c in result.checks):
            found.extend(e for e in [view.evidence("spectrum", result, "condition.max")] if e is not None)
    return found


def local_failure(view: ReportView) -> Finding | None:
    """On or near the data: attack holes, wrong memory-saving gradients, data round trips that
    break on some samples, an ill-conditioned or singular Jacobian on the data."""
    evidence = tuple(_attack(view) + _gradient(view) + _data_roundtrip(view) + _data_spectrum(view))
    if not evidence:
        return None
    return Finding(
        FD,
        "local_failure",
        f"the model breaks on or near its data ({_cite(evidence)}): the FD regularizer (eps 0.1, "
        "1e-4 on F and F^-1, every 10 steps) bounds both directions around the data",
        evidence,
    )


def supervised_collapse(view: ReportView) -> Finding | None:
    """The same local evidence, for the NF objective as a regularizer: its ``-log|det J|``
    term grows without bound as any singular value goes to 0. Only a supervised INN can take
    it (a density model's objective already is the NF objective): the plan checks that."""
    found = local_failure(view)
    if found is None:
        return None
    return Finding(
        NF,
        "supervised_collapse",
        f"a supervised INN that breaks on or near its data ({_cite(found.evidence)}): the NF "
        "objective with a small weight (1e-5) keeps it from collapsing a direction",
        found.evidence,
    )


def _float64_holds(view: ReportView) -> list[Evidence]:
    found: list[Evidence] = []
    for result in view.sets("precision"):
        wide, narrow = view.value(result, "float64.invertible"), view.value(result, "float32.invertible")
        if wide == 1 and narrow == 0:
            found.extend(e for e in [view.evidence("precision", result, "float32.invertible")] if e is not None)
    for result in view.sets("roundtrip"):
        wide_nonfinite = view.value(result, "float64.nonfinite_fraction")
        wide_error = view.value(result, "float64.rel_error_l2.max")
        broken = _breaks(view, "roundtrip", result)
        if wide_nonfinite is None or wide_error is None or not broken:
            continue
        if wide_nonfinite == 0 and not view.above(wide_error, WRONG_MEDIAN):
            found.extend(broken)
    return found


def float32_only(view: ReportView) -> Finding | None:
    """Where the round trip fails in float32 and holds in float64 (``precision``, or
    ``roundtrip`` with ``--float64-check``): precision, not the map, is the limit there."""
    evidence = tuple(_float64_holds(view))
    if not evidence:
        return None
    return Finding(
        PRECISION,
        "float32_only",
        f"the round trip fails in float32 and holds in float64 ({_cite(evidence)}): run the failing "
        "blocks' inverse in float64",
        evidence,
    )


def _float64_invertible(view: ReportView, dataset: str) -> bool:
    """Whether the ``precision`` audit found the model invertible in float64 on ``dataset``."""
    return any(view.value(r, "float64.invertible") == 1 for r in view.sets("precision") if r.dataset == dataset)


def wrong_inverse(view: ReportView) -> Finding | None:
    """The blocker: the median data round trip is off by more than the fail level, and float64
    does not hold where it was measured (``roundtrip --float64-check``, ``precision``). Returns
    the finding that stops every remedy."""
    evidence: list[Evidence] = []
    for result in view.sets("roundtrip", DATA):
        median = view.evidence("roundtrip", result, "rel_error_l2.median")
        if median is None or not view.above(median.value, WRONG_MEDIAN) or math.isnan(median.value):
            continue
        wide = view.value(result, "float64.rel_error_l2.median")
        if (wide is not None and not view.above(wide, WRONG_MEDIAN)) or _float64_invertible(view, result.dataset):
            continue  # float64 holds: precision, which float32_only covers
        evidence.append(median)
    if not evidence:
        return None
    return Finding(
        "",
        "wrong_inverse",
        f"the inverse is off on the typical data sample ({_cite(tuple(evidence))}): that is the code of "
        "F^-1, not its conditioning; fine-tuning, a bounded scale or float64 cannot fix it. Check that "
        "inverse(forward(x)) == x on one sample by hand",
        tuple(evidence),
    )


REMEDY_RULES: tuple[Callable[[ReportView], Finding | None], ...] = (
    ood_explodes,
    collapsed_scale,
    local_failure,
    supervised_collapse,
    float32_only,
)
"""Every rule that calls for a remedy, in the order the remedies are applied."""
