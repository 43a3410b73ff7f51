"""The diagnosis: what a report means, derived from its results by explicit rules.

A researcher reading a report wants five answers: where the model is invertible (the data, OOD
inputs, the neighbourhood of the data, its own samples), where it is not, where in the network
it breaks, why, and what to change and re-run. :func:`diagnose` answers them with one rule per
question; a rule speaks only when the report holds evidence for it, and every statement cites
that evidence as (audit, set, metric path, value).

Two properties hold for every report (``tests/verdict/test_diagnosis_properties.py``):

- a statement that explains a failing or warning set is generated from the checks that decided
  that status and cites exactly those metrics (:mod:`innaudit.verdict.phrases` words them with
  their values, limits and sample counts); a gated metric of any registered audit that fails
  alone is cited by some statement (:func:`rule_unexplained` covers the audits no rule words);
- no statement contradicts a number in the report: every figure a statement prints is the
  value of a metric it cites (or that metric's limit), "invertible" is only said of sets that
  passed, and a float64 verdict rests on the float64 error, not on finiteness alone.

An audit that a ``--budget`` cut (``run.plan``) says so in each statement that rests on it.

The remedies are those of Behrmann et al., "Understanding and Mitigating Exploding Inverses in
Invertible Neural Networks", AISTATS 2021 (https://arxiv.org/abs/2006.09347): affine coupling is
only locally bi-Lipschitz (its inverse amplifies by ``1 / min |scale|``, unbounded), so use
additive coupling or a bounded scale; the bi-directional finite-difference regularizer (FD,
coefficient 1e-4 on F and on F^-1, step 0.1) stabilizes the inverse where the data lies;
spectral normalization with ``Lip < 1`` (residual flows) bounds ``Lip(F^-1) <= 1 / (1 - c)``
everywhere; and a model that is only invertible on the data must only be inverted there.

The diagnosis is computed from the Report and stored nowhere: the JSON report carries it as
``diagnosis`` and ``innaudit render`` recomputes the same from the saved results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from innaudit.core.bound_kind import BoundKind
from innaudit.core.metrics import MetricTable, declared, percent
from innaudit.core.results import Report, SetResult, Status, lookup
from innaudit.verdict import certify_words
from innaudit.verdict.float64 import EXACT_LIMIT, float64_sentence
from innaudit.verdict.phrases import Failing, figure, limit_words, part, role_of, what

__all__ = [
    "RULES",
    "Diagnosis",
    "Evidence",
    "Kind",
    "Statement",
    "budget_cut",
    "diagnose",
    "diagnosis_to_dict",
]

FD_COEFF, FD_EPS = 1e-4, 0.1
"""The paper's FD coefficient (``--fd_coeff``, ``--fd_inv_coeff``) and step; the same numbers as
``innaudit.train.regularizers.FD_COEFF`` / ``FD_EPS`` (not imported: that module needs torch)."""

TINY = 1e-6
"""A smallest singular value or coupling scale below this makes F^-1 amplify by over 1e6."""


class Kind(str, Enum):
    """Which question a statement answers, in reading order."""

    INVERTIBLE = "invertible"
    NOT_INVERTIBLE = "not-invertible"
    CAUTION = "caution"
    BREAKS = "breaks"
    WHY = "why"
    DO = "do"
    RERUN = "rerun"

    @property
    def label(self) -> str:
        """The few words a renderer puts before the statement."""
        return {
            "invertible": "invertible",
            "not-invertible": "not invertible",
            "caution": "caution",
            "breaks": "breaks",
            "why": "why",
            "do": "do",
            "rerun": "re-run",
        }[self.value]


@dataclass(frozen=True)
class Evidence:
    """One number a statement rests on."""

    audit: str
    dataset: str
    metric: str
    value: Any

    @property
    def text(self) -> str:
        """``roundtrip[uniform] nonfinite_fraction=0.7``."""
        value = self.value
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        return f"{self.audit}[{self.dataset}] {self.metric}={shown}"


@dataclass(frozen=True)
class Statement:
    """One answer: its kind, the rule that made it, the sentence, and its evidence."""

    kind: Kind
    rule: str
    text: str
    evidence: tuple[Evidence, ...] = ()

    @property
    def cite(self) -> str:
        """The evidence in one line (at most three numbers, then a count)."""
        shown = [e.text for e in self.evidence[:3]]
        if len(self.evidence) > 3:
            shown.append(f"+{len(self.evidence) - 3} more")
        return "; ".join(shown)


@dataclass(frozen=True)
class Diagnosis:
    """Every statement the rules made, in :class:`Kind` order."""

    statements: tuple[Statement, ...]

    def of(self, kind: Kind) -> tuple[Statement, ...]:
        """The statements of one kind."""
        return tuple(s for s in self.statements if s.kind is kind)


# -- reading the report ----------------------------------------------------------------------
class _View:
    """The parts of a report the rules read: sets by audit, set roles, model path, domain, the
    budget's cuts, and the metric declarations (for the words of audits no rule knows)."""

    def __init__(self, report: Report, table: MetricTable | None = None) -> None:
        self.report = report
        self.table = table or {}
        self.audits = {a.id: a for a in report.audits}
        datasets = report.run.datasets or []
        self.roles = {d.get("name"): d.get("role") for d in datasets if isinstance(d, Mapping)}
        self.model = str(report.target.model or "MODEL")
        self.cuts = budget_cut(report)

    def sets(self, audit: str) -> tuple[SetResult, ...]:
        found = self.audits.get(audit)
        return found.results if found is not None else ()

    def ran(self, audit: str) -> bool:
        found = self.audits.get(audit)
        return found is not None and found.status is not Status.SKIP

    def role(self, dataset: str) -> str:
        return role_of(dataset, {str(k): str(v) for k, v in self.roles.items() if v})

    def failed(self, result: SetResult) -> bool:
        return result.status.rank >= Status.FAIL.rank or bool(
            result.waiver and result.waiver.waived_status is Status.FAIL
        )

    def warned(self, result: SetResult) -> bool:
        """A set whose worst check warned (waived or not), none failing."""
        if self.failed(result):
            return False
        return result.status is Status.WARN or bool(result.waiver and result.waiver.waived_status is Status.WARN)

    def passed(self, result: SetResult) -> bool:
        return result.status is Status.PASS and not result.waiver

    def broke(self, result: SetResult, *others: str) -> bool:
        """``result``'s set failed or warned, in its own audit or in one of ``others`` on the
        same data set: a localizing audit names a place only where something broke there."""
        found = [result, *(o for a in others for o in self.sets(a) if o.dataset == result.dataset)]
        return any(self.failed(r) or self.warned(r) for r in found)

    def rated(self, audit: str, metric: str) -> bool:
        found = declared(self.table, audit, metric)
        return bool(found.rate) if found is not None else metric.endswith("_fraction")

    def deciding(self, audit: str, result: SetResult) -> list[Failing]:
        """The checks that decided the set's status: its failing ones (a failed set) or its
        warning ones (a warned set)."""
        level = Status.FAIL if self.failed(result) else Status.WARN if self.warned(result) else None
        return [Failing(result, c, self.rated(audit, c.metric)) for c in result.checks if c.status is level]

    def cut_note(self, audit: str) -> str:
        """`` (the budget cut this audit: ...)`` when ``--budget`` cut it, else ``""``."""
        cut = self.cuts.get(audit)
        return f" (the budget cut this audit: {cut})" if cut else ""


def budget_cut(report: Report) -> dict[str, str]:
    """``{audit id: what --budget cut}`` from the report's ``run.plan`` (empty without a budget
    or without cuts): ``"steps 200 -> 25; 32 -> 2 samples per set"``."""
    plan = report.run.plan
    if not isinstance(plan, Mapping) or plan.get("budget_s") is None:
        return {}
    return {
        str(a.get("id")): str(a.get("cut")) for a in plan.get("audits") or [] if isinstance(a, Mapping) and a.get("cut")
    }


def _num(result: SetResult, path: str) -> float | None:
    value = lookup(result.metrics, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _ev(audit: str, result: SetResult, path: str) -> Evidence:
    return Evidence(audit, result.dataset, path, lookup(result.metrics, path))


def _sci(value: float) -> str:
    """``1e-4`` rather than ``0.0001``."""
    return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _names(results: list[SetResult]) -> str:
    return ", ".join(r.dataset for r in results)


def _cap(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


WHERE = {"in-distribution": "On the data", "ood": "Off the data (OOD)", "samples": "On its own samples"}
"""The words before a statement about sets of one role."""


def _where(role: str) -> str:
    return WHERE.get(role, "On the other sets")


def _deciding_evidence(audit: str, failing: list[Failing]) -> list[Evidence]:
    """The deciding checks' metrics and each set's ``n``, as evidence."""
    out = [Evidence(audit, f.result.dataset, f.check.metric, f.check.value) for f in failing]
    seen = set()
    for f in failing:
        if f.rate and f.n is not None and f.result.dataset not in seen:
            seen.add(f.result.dataset)
            out.append(_ev(audit, f.result, "n"))
    return out


def _parts(view: _View, audit: str, results: list[SetResult]) -> tuple[list[str], list[Evidence]]:
    """The deciding checks of ``results``, one part per metric (sets in report order)."""
    by_metric: dict[str, list[Failing]] = {}
    for r in results:
        for f in view.deciding(audit, r):
            by_metric.setdefault(f.check.metric, []).append(f)
    parts = [part(what(audit, metric, view.table), found) for metric, found in by_metric.items()]
    evidence = [e for found in by_metric.values() for e in _deciding_evidence(audit, found)]
    return parts, evidence


# -- where: invertible or not ----------------------------------------------------------------
def _all_finite(view: _View, audit: str, good: list[SetResult], noun: str) -> str:
    """``digits:test: all 360 round trips finite, max relative error 4.3e-07``, one per set."""
    pieces = []
    for r in good:
        worst = _num(r, "rel_error_l2.max")
        tail = f", max relative error {worst:.2g}" if worst is not None and not math.isnan(worst) else ""
        pieces.append(f"{r.dataset}: all {int(_num(r, 'n') or 0)} {noun} finite{tail}")
    return "; ".join(pieces)


def _singular_note(view: _View, result: SetResult) -> tuple[str, list[Evidence]]:
    """`` (J_F singular to the model's precision on 100.0 % of 64 samples: spectrum)`` when the
    spectrum audit failed the same set on a singular Jacobian: the reason the map cannot be
    inverted there, named with the round trip's failure."""
    spec = next((r for r in view.sets("spectrum") if r.dataset == result.dataset), None)
    if spec is None:
        return "", []
    check = next((c for c in spec.checks if c.metric == "singular_fraction" and c.status is Status.FAIL), None)
    if check is None:
        return "", []
    n = int(_num(spec, "n") or 0)
    note = f"J_F is singular to the model's precision on {percent(check.value)} of {n} samples of {result.dataset} (spectrum)"
    return note, [_ev("spectrum", spec, "singular_fraction"), _ev("spectrum", spec, "n")]


def _failing_by_role(
    view: _View, audit: str, role: str, where: str, rule: str, singular: bool = False
) -> list[Statement]:
    """One statement for the failed sets of ``role`` and one for the warned ones, each built
    from the checks that decided them; ``singular`` adds the spectrum's singular Jacobian on
    the same failed sets (the reason a round trip cannot succeed there)."""
    sets = [r for r in view.sets(audit) if view.role(r.dataset) == role]
    out = []
    for kind, chosen in (
        (Kind.NOT_INVERTIBLE, [r for r in sets if view.failed(r)]),
        (Kind.CAUTION, [r for r in sets if view.warned(r)]),
    ):
        if not chosen:
            continue
        parts, evidence = _parts(view, audit, chosen)
        if not parts:
            continue
        notes = []
        for r in chosen if kind is Kind.NOT_INVERTIBLE and singular else []:
            note, more = _singular_note(view, r)
            if note:
                notes.append(note)
                evidence += more
        text = f"{where}: {'; '.join(parts + notes)}{view.cut_note(audit)}"
        out.append(Statement(kind, rule, text + ".", tuple(evidence)))
    return out


def _round_trips(view: _View, audit: str, role: str, where: str, rule: str, noun: str) -> list[Statement]:
    good = [r for r in view.sets(audit) if view.role(r.dataset) == role and view.passed(r)]
    out = []
    if good:
        evidence = tuple(_ev(audit, r, p) for r in good for p in ("n", "nonfinite_fraction", "rel_error_l2.max"))
        text = f"{where}: {_all_finite(view, audit, good, noun)}{view.cut_note(audit)}."
        out.append(Statement(Kind.INVERTIBLE, rule, text, evidence))
    return out + _failing_by_role(view, audit, role, where, rule, singular=True)


def rule_data(view: _View) -> list[Statement]:
    """Round trips on the in-distribution sets: is the model invertible where it is used?"""
    return _round_trips(view, "roundtrip", "in-distribution", "On the data", "roundtrip-in-distribution", "round trips")


def rule_ood(view: _View) -> list[Statement]:
    """Round trips on the OOD sets: is it invertible away from the data?"""
    return _round_trips(view, "roundtrip", "ood", "Off the data (OOD)", "roundtrip-ood", "round trips")


def rule_attack(view: _View) -> list[Statement]:
    """The gradient attack: is it invertible within half a bin of the data? Its statements say
    how many points were searched, with how many steps, in which ball."""
    out = []
    for r in view.sets("attack"):
        eps, n, steps = _num(r, "epsilon"), int(_num(r, "n") or 0), _num(r, "steps")
        search = f"a gradient search of {int(steps)} steps" if steps else "a gradient search"
        ball = f"within {eps:.3g} (L-inf) of {n} points of {r.dataset}" if eps else f"near {n} points of {r.dataset}"
        context = [_ev("attack", r, p) for p in ("n", "steps", "epsilon") if _num(r, p) is not None]
        rand = _num(r, "random_search.nonfinite_fraction")
        random_text = f" (random search: {percent(rand)} non-finite)" if rand is not None else ""
        if rand is not None:
            context.append(_ev("attack", r, "random_search.nonfinite_fraction"))
        cut = view.cut_note("attack")
        if view.passed(r):
            text = f"Near the data: {search} {ball} finds no failure{cut}."
            evidence = [_ev("attack", r, p) for p in ("nonfinite_fraction", "fraction_above_threshold")]
            out.append(Statement(Kind.INVERTIBLE, "attack", text, tuple(evidence + context)))
            continue
        failing = view.deciding("attack", r)
        if not failing:
            continue
        kind = Kind.NOT_INVERTIBLE if view.failed(r) else Kind.CAUTION
        shown = " and ".join(_attack_finding(f) for f in failing)
        text = f"Near the data: {search} {ball} finds {shown}{random_text}{cut}."
        out.append(Statement(kind, "attack", text, tuple(_deciding_evidence("attack", failing) + context)))
    return out


ATTACK_WORDS = {
    "nonfinite_fraction": "a non-finite round trip near {share} of them",
    "fraction_above_threshold": "a relative error above the attack threshold near {share} of them",
}
"""How the attack's rate checks read after "finds"."""


def _attack_finding(f: Failing) -> str:
    limit = limit_words(f.check, f.rate)
    words = ATTACK_WORDS.get(f.check.metric)
    if words is not None and not math.isnan(f.check.value):
        return words.format(share=percent(f.check.value)) + f" ({limit})"
    return f"{what('attack', f.check.metric, None)} {_figure(f)} ({limit})"


def rule_sampling(view: _View) -> list[Statement]:
    """Round trips of the model's own samples."""
    good = [r for r in view.sets("sampling") if view.passed(r)]
    out = []
    if good:
        cited = tuple(_ev("sampling", r, p) for r in good for p in ("n", "nonfinite_fraction", "rel_error_l2.max"))
        text = f"On its own samples: {_all_finite(view, 'sampling', good, 'round trips')}{view.cut_note('sampling')}."
        out.append(Statement(Kind.INVERTIBLE, "sampling", text, cited))
    for kind, chosen in (
        (Kind.NOT_INVERTIBLE, [r for r in view.sets("sampling") if view.failed(r)]),
        (Kind.CAUTION, [r for r in view.sets("sampling") if view.warned(r)]),
    ):
        parts, evidence = _parts(view, "sampling", chosen)
        if parts:
            text = f"On its own samples: {'; '.join(parts)}{view.cut_note('sampling')}."
            out.append(Statement(kind, "sampling", text, tuple(evidence)))
    return out


def rule_spectrum(view: _View) -> list[Statement]:
    """The Jacobians: singular to the model's precision, non-finite, ill-conditioned, or
    inconsistent between F and F^-1; one statement per role and status, from the deciding checks."""
    out = []
    roles = dict.fromkeys(view.role(r.dataset) for r in view.sets("spectrum"))
    for role in roles:
        out += _failing_by_role(view, "spectrum", role, _where(role), f"spectrum-{role or 'other'}")
    return out


# -- where it breaks -------------------------------------------------------------------------
def rule_first_block(view: _View) -> list[Statement]:
    """The first failing block per set, from ``layers`` (sets grouped by block), on the sets
    where ``layers`` or ``roundtrip`` failed or warned (a block that stands out among passing
    blocks breaks nothing); the layers checks that failed or warned on those sets are cited
    with it."""
    by_block: dict[str, list[SetResult]] = {}
    for r in view.sets("layers"):
        culprit = lookup(r.metrics, "culprit")
        located = isinstance(culprit, str) and culprit and (_num(r, "culprit_index") or 0) >= 0
        if located and view.broke(r, "roundtrip"):  # a block that stands out among passing ones breaks nothing
            by_block.setdefault(str(culprit), []).append(r)
    if not by_block:
        return []
    total = max(int(_num(r, "blocks") or 0) for rs in by_block.values() for r in rs)
    parts = [f"{block} on {_names(rs)}" for block, rs in by_block.items()]
    chosen = [r for rs in by_block.values() for r in rs]
    evidence = [_ev("layers", r, "culprit") for r in chosen] + [_ev("layers", chosen[0], "blocks")]
    evidence += [e for r in chosen for e in _deciding_evidence("layers", view.deciding("layers", r))]
    text = f"First failing block (of {total}): {'; '.join(parts)}{view.cut_note('layers')}."
    return [Statement(Kind.BREAKS, "first-block", text, tuple(evidence))]


def rule_layers_unlocated(view: _View) -> list[Statement]:
    """Failing or warning ``layers`` sets where no single block stands out (no culprit)."""
    sets = [
        r
        for r in view.sets("layers")
        if not (lookup(r.metrics, "culprit") or "") and (view.failed(r) or view.warned(r))
    ]
    cut = [r for r in sets if all(c.metric == "budget_cut_fraction" for c in r.checks if c.status is not Status.PASS)]
    out = []
    for kind, group in ((Kind.BREAKS, [r for r in sets if r not in cut]), (Kind.CAUTION, cut)):
        parts, evidence = _parts(view, "layers", group)
        if parts:  # a set warned only by the budget's cut is not measured to the end: a caution
            lead = "no single block stands out" if kind is Kind.BREAKS else "not measured to the end"
            text = f"Block by block ({_names(group)}), {lead}: {'; '.join(parts)}{view.cut_note('layers')}."
            out.append(Statement(kind, "layers", text, tuple(evidence)))
    return out


def rule_direction(view: _View) -> list[Statement]:
    """Forward overflow (the latent is already non-finite) vs inverse explosion (only F^-1 is),
    from each set's non-finite share and latent non-finite share."""
    forward, inverse, evidence = [], [], []
    for r in view.sets("roundtrip"):
        total, latent = _num(r, "nonfinite_fraction"), _num(r, "latent_nonfinite_fraction")
        if not total or latent is None:
            continue
        if latent > 0:
            rest = f" (of {percent(total)} non-finite; the rest explode in the inverse)" if total > latent else ""
            forward.append(f"{r.dataset} {percent(latent)}{rest}")
        else:
            inverse.append(f"{r.dataset} {percent(total)}")
        evidence += [_ev("roundtrip", r, "latent_nonfinite_fraction"), _ev("roundtrip", r, "nonfinite_fraction")]
    parts = []
    if forward:
        parts.append(f"the forward pass already overflows (non-finite latent) on {', '.join(forward)}")
    if inverse:
        parts.append(f"the inverse explodes from a finite latent on {', '.join(inverse)}")
    if not parts:
        return []
    return [Statement(Kind.BREAKS, "direction", _cap("; ".join(parts)) + ".", tuple(evidence))]


def _exact_limit(result: SetResult) -> float:
    """The warn level of the set's ``rel_error_l2.max`` check (the default when there is none)."""
    check = next((c for c in result.checks if c.metric == "rel_error_l2.max"), None)
    return check.warn if check is not None and check.warn is not None else EXACT_LIMIT


def rule_float64(view: _View) -> list[Statement]:
    """The float64 re-run of a set that failed or warned in float32: float64 exact (float32
    precision is lost), float64 finite but wrong (ill-conditioned or not invertible there), or
    float64 non-finite (the map breaks); each with the float64 figure it rests on."""
    out = []
    for r in view.sets("roundtrip"):
        f64, rel64 = _num(r, "float64.nonfinite_fraction"), _num(r, "float64.rel_error_l2.max")
        failing = view.deciding("roundtrip", r)
        if f64 is None or rel64 is None or not failing:
            continue
        limit = _exact_limit(r)
        f32 = "; ".join(f"{what('roundtrip', f.check.metric, view.table)} {_figure(f)}" for f in failing)
        evidence = [
            _ev("roundtrip", r, "float64.nonfinite_fraction"),
            _ev("roundtrip", r, "float64.rel_error_l2.max"),
            *_deciding_evidence("roundtrip", failing),
        ]
        if not any(e.metric == "rel_error_l2.max" for e in evidence):
            evidence.append(_ev("roundtrip", r, "rel_error_l2.max"))  # its warn level is the limit used
        text = f"{r.dataset}: {float64_sentence(f64, rel64, limit)} (float32: {f32})."
        out.append(Statement(Kind.BREAKS, "float64", text, tuple(evidence)))
    return out


def _figure(failing: Failing) -> str:
    return figure(failing.check.value, failing.rate)


# -- audits no rule words --------------------------------------------------------------------
KNOWN = {"roundtrip", "sampling", "attack", "spectrum", "layers", "convergence"}
"""The audits whose failing checks the rules above word; :func:`rule_unexplained` words the rest."""

KIND_OF_FAILURE = {"logdet": Kind.BREAKS, "gradient": Kind.BREAKS}
"""Audits whose failure is not a failure to invert (a wrong log-det, a wrong gradient)."""


def rule_unexplained(view: _View) -> list[Statement]:
    """The failing and warning sets of every other audit (precision, logdet, gradient, bounds,
    any audit added later), worded from their deciding checks, one statement per audit, role
    and status."""
    out = []
    for audit in view.audits.values():
        if audit.id in KNOWN:
            continue
        roles = dict.fromkeys(view.role(r.dataset) for r in audit.results)
        for role in roles:
            sets = [r for r in audit.results if view.role(r.dataset) == role]
            for failed, chosen in (
                (True, [r for r in sets if view.failed(r)]),
                (False, [r for r in sets if view.warned(r)]),
            ):
                parts, evidence = _parts(view, audit.id, chosen)
                if not parts:
                    continue
                kind = KIND_OF_FAILURE.get(audit.id, Kind.NOT_INVERTIBLE) if failed else Kind.CAUTION
                text = f"{_where(role)}: {audit.id}: {'; '.join(parts)}{view.cut_note(audit.id)}."
                out.append(Statement(kind, f"{audit.id}-{role or 'other'}", text, tuple(evidence)))
    return out


def rule_first_token(view: _View) -> list[Statement]:
    """Autoregressive blocks (``tokens``): the block and token range where the inverse chain's
    accumulated error leaves rounding, per set where ``tokens`` or ``roundtrip`` failed or
    warned (sets grouped by place), and Jacobi solves stopped at their cap."""
    by_place: dict[str, list[SetResult]] = {}
    capped: list[SetResult] = []
    for r in view.sets("tokens"):
        where = lookup(r.metrics, "where")
        if isinstance(where, str) and where and view.broke(r, "roundtrip"):
            by_place.setdefault(where, []).append(r)
        if (_num(r, "jacobi.nonconverged_fraction") or 0.0) > 0:
            capped.append(r)
    out = []
    if by_place:
        tokens = max(int(_num(r, "tokens") or 0) for rs in by_place.values() for r in rs)
        parts = [f"{place} (of {tokens}) on {_names(rs)}" for place, rs in by_place.items()]
        out.append(
            Statement(
                Kind.BREAKS,
                "first-token",
                f"Autoregressive inverse: the accumulated error first leaves rounding in {'; '.join(parts)}.",
                tuple(_ev("tokens", r, p) for rs in by_place.values() for r in rs for p in ("where", "first_token")),
            )
        )
    if capped:
        parts = [
            f"{r.dataset} {percent(_num(r, 'jacobi.nonconverged_fraction') or 0.0)} "
            f"(residual up to {_num(r, 'jacobi.residual.max') or math.nan:.2g})"
            for r in capped
        ]
        out.append(
            Statement(
                Kind.BREAKS,
                "jacobi-capped",
                f"The Jacobi inverse stopped at its iteration cap without converging on {', '.join(parts)}.",
                tuple(
                    _ev("tokens", r, p) for r in capped for p in ("jacobi.nonconverged_fraction", "jacobi.residual.max")
                ),
            )
        )
    return out


def rule_token_scales(view: _View) -> list[Statement]:
    """Why an autoregressive inverse amplifies: large log-scales ``a`` (the inverse multiplies
    by ``exp(a)``), and the bounded scale that STARFlow uses as the remedy."""
    failing = [r for r in view.sets("tokens") if view.failed(r) and (_num(r, "log_scale.max") or 0.0) > 5]
    if not failing:
        return []
    top = max(_num(r, "log_scale.max") or 0.0 for r in failing)
    share = max(_num(r, "log_scale.above_5") or 0.0 for r in failing)
    evidence = tuple(_ev("tokens", r, p) for r in failing for p in ("log_scale.max", "log_scale.above_5"))
    return [
        Statement(
            Kind.WHY,
            "token-scale",
            f"The autoregressive inverse multiplies each token by exp(a) and feeds it to every later "
            f"token; a reaches {top:.3g} (|a| > 5 for {percent(share)} of the log-scales) on {_names(failing)}.",
            evidence,
        ),
        Statement(
            Kind.DO,
            "soft-clip",
            "Bound the scale as STARFlow does: soft clip c * tanh(u / c) (c = 4) on the "
            "transformer's output and a softplus scale, so exp(a) stays below about 4.6.",
            evidence[:2],
        ),
    ]


# -- why -------------------------------------------------------------------------------------
def _grouped(results: list[SetResult], path: str) -> str:
    """``0 on uniform, gaussian; 8.5e-26 on rademacher``: sets grouped by the shown value."""
    groups: dict[str, list[SetResult]] = {}
    for r in results:
        groups.setdefault(f"{_num(r, path):.2g}", []).append(r)
    return "; ".join(f"{value} on {_names(rs)}" for value, rs in groups.items())


def _affine_bound_reason(view: _View) -> str:
    """The first block whose bound kind is an affine coupling's, with how it was bounded."""
    for r in view.sets("bounds"):
        for row in certify_words.affine_rows(_rows(r)):
            return f"block {row.get('name')}: {row.get('how')}"
    return ""


def _only_bounded_scales(view: _View) -> bool:
    """Every affine coupling the bounds audit found has a bounded scale (a soft clamp)."""
    kinds = {row.get("kind") for r in view.sets("bounds") for row in certify_words.affine_rows(_rows(r))}
    return kinds == {BoundKind.AFFINE_SCALE_BOUNDED.value}


def rule_unbounded(view: _View) -> list[Statement]:
    """No global bound (affine coupling) and the local evidence: scales or sigma_min near 0."""
    scales = [r for r in view.sets("layers") if (v := _num(r, "scale_min")) is not None and v < TINY]
    sigma = [r for r in view.sets("spectrum") if (v := _num(r, "forward.sv_min.min")) is not None and v < TINY]
    reason = _affine_bound_reason(view)
    if not (scales or sigma or reason):
        return []
    parts = []
    if reason or scales:
        parts.append(
            "affine coupling has no global Lipschitz bound (its scale is bounded, but the cross term "
            "(x2 + t) g'(h) J_h grows with the input)"
            if _only_bounded_scales(view) and not scales
            else "affine coupling has no global Lipschitz bound (F^-1 divides by the scale, so 1 / min |scale| is unbounded)"
        )
    if scales:
        parts.append(f"the coupling scale reaches {_grouped(scales, 'scale_min')}")
    if sigma:
        parts.append(f"local sigma_min(J_F) reaches {_grouped(sigma, 'forward.sv_min.min')}")
    evidence = [_affine_evidence(view)] if reason else []
    evidence += [_ev("layers", r, "scale_min") for r in scales]
    evidence += [_ev("spectrum", r, "forward.sv_min.min") for r in sigma]
    return [Statement(Kind.WHY, "unbounded-inverse", _cap("; ".join(parts)) + ".", tuple(evidence))]


def rule_certified(view: _View) -> list[Statement]:
    """A certified global bound held: invertible everywhere, with a known amplification."""
    out = []
    for r in view.sets("bounds"):
        bound = _num(r, "inverse.bound")
        if r.status is Status.PASS and bound is not None and math.isfinite(bound):
            out.append(
                Statement(
                    Kind.WHY,
                    "certified",
                    f"The architecture certifies Lip(F^-1) <= {bound:.3g} everywhere; "
                    "measured constants stay below it.",
                    (_ev("bounds", r, "inverse.bound"), _ev("bounds", r, "violation_fraction")),
                )
            )
    return out


# -- what to do ------------------------------------------------------------------------------
def _kinds(statements: list[Statement]) -> dict[str, Statement]:
    return {s.rule: s for s in statements}


INVERSION_RULES = ("roundtrip-", "attack", "sampling", "spectrum-", "precision-")
"""Rules whose "not invertible" statements the inverse-stabilizing remedies answer."""


def rule_remedies(view: _View, found: list[Statement]) -> list[Statement]:
    """The paper's remedies that the evidence calls for, most specific first."""
    rules = _kinds([s for s in found if s.kind in (Kind.NOT_INVERTIBLE, Kind.WHY)])
    bad_where = [s for s in found if s.kind is Kind.NOT_INVERTIBLE and s.rule.startswith(INVERSION_RULES)]
    out = []
    if "unbounded-inverse" in rules:
        out.append(
            Statement(
                Kind.DO,
                "bounded-coupling",
                "Use additive coupling or a bounded scale (sigmoid(h+2), exp(tanh(h)*log(M))): "
                "F^-1 then never divides by a vanishing scale.",
                rules["unbounded-inverse"].evidence,
            )
        )
    if bad_where:
        out.append(
            Statement(
                Kind.DO,
                "fd-regularizer",
                f"Train with innaudit.train.regularizers.fd_regularizer (the paper's FD: "
                f"coefficient {_sci(FD_COEFF)} on F and F^-1, step {FD_EPS:g}, every 10 "
                "iterations) to keep the inverse stable near the data.",
                tuple(e for s in bad_where for e in s.evidence[:1]),
            )
        )
    global_need = [s for s in bad_where if s.rule in ("roundtrip-ood", "sampling", "spectrum-ood")]
    if global_need:
        out.append(
            Statement(
                Kind.DO,
                "lipschitz",
                "For invertibility everywhere: a residual flow with spectral "
                "normalization, Lip < 1 (certified by --audit bounds).",
                tuple(e for s in global_need for e in s.evidence[:1]),
            )
        )
    near = {"roundtrip-in-distribution", "attack", "spectrum-in-distribution"}
    if "roundtrip-ood" in rules and not near & set(rules):
        domain = (view.report.target.info or {}).get("domain") or {}
        span = f" [{domain.get('low')}, {domain.get('high')}]" if domain.get("low") is not None else ""
        out.append(
            Statement(
                Kind.DO,
                "restrict-inputs",
                f"Or invert only encodings of real data: keep inputs in the data "
                f"range{span} and reject OOD inputs before F^-1.",
                rules["roundtrip-ood"].evidence[:1],
            )
        )
    return out


def rule_rerun(view: _View, found: list[Statement]) -> list[Statement]:
    """The runs that would confirm or localize the failure, and the regression check after a fix."""
    if not any(s.kind is Kind.NOT_INVERTIBLE for s in found):
        return []
    extra = [f"--audit {a}" for a in ("layers", "attack") if not view.ran(a)]
    if not any(s.rule == "roundtrip-in-distribution" and s.kind is Kind.INVERTIBLE for s in found):
        extra = [e for e in extra if e != "--audit attack"]  # the attack starts from working data
    if not any(_num(r, "float64.nonfinite_fraction") is not None for r in view.sets("roundtrip")):
        extra.append("--float64-check")
    out = []
    if extra:
        audits = "--audit roundtrip " if any(e.startswith("--audit") for e in extra) else ""
        out.append(
            Statement(Kind.RERUN, "localize", f"To localize: innaudit run {view.model} {audits}{' '.join(extra)}")
        )
    if view.cuts:
        out.append(
            Statement(
                Kind.RERUN,
                "uncut",
                f"The budget cut {', '.join(view.cuts)}: re-run with a larger --budget (or none) "
                "before trusting what they passed.",
            )
        )
    out.append(
        Statement(
            Kind.RERUN,
            "confirm",
            f"After a fix: innaudit run NEW.pt with the same audits and --seed "
            f"{view.report.run.seed} -o json=new.json, then innaudit compare "
            "THIS.json new.json.",
        )
    )
    return out


# -- iterative inverses and certificates -------------------------------------------------------
def _rows(result: SetResult) -> list[Mapping[str, Any]]:
    rows = result.series.get("blocks") if isinstance(result.series, Mapping) else None
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def _affine_evidence(view: _View) -> Evidence:
    for r in view.sets("bounds"):
        if certify_words.affine_rows(_rows(r)):
            return _ev("bounds", r, "empirical_blocks")
    return Evidence("bounds", "", "empirical_blocks", None)


def rule_convergence(view: _View) -> list[Statement]:
    """Iterative inverses: samples that did not converge (the cap hit, or the residual above the
    limit at exit) per role, and whose the error is by the tolerance sweep (words:
    :mod:`innaudit.verdict.certify_words`)."""
    out = []
    sets = view.sets("convergence")
    for role in dict.fromkeys(view.role(r.dataset) for r in sets):
        for r in (r for r in sets if view.role(r.dataset) == role):
            limit = _num(r, "max_residual")
            text = certify_words.nonconvergence_text(r.metrics, _rows(r), limit)
            if text and view.failed(r):
                causes = ("nonconverged_fraction", "unmeasured_blocks")
                evidence = tuple(_ev("convergence", r, m) for m in causes if (_num(r, m) or 0) > 0)
                evidence += (_ev("convergence", r, "n"),)
                out.append(
                    Statement(
                        Kind.NOT_INVERTIBLE,
                        f"convergence-{role or 'other'}",
                        f"{_where(role)}: the iterative inverse fails on {r.dataset}: {text}.",
                        evidence,
                    )
                )
            elif view.warned(r):
                out.append(
                    Statement(
                        Kind.CAUTION,
                        f"convergence-{role or 'other'}",
                        f"{_where(role)}: every inverse converged on {r.dataset}, but the residual at exit "
                        f"reaches {_num(r, 'residual.max') or math.nan:.3g}.",
                        (_ev("convergence", r, "residual.max"),),
                    )
                )
            sweep = r.series.get("sweep") if isinstance(r.series, Mapping) else None
            for verdict, words in certify_words.sweep_texts(sweep if isinstance(sweep, list) else []):
                if text:
                    out.append(
                        Statement(
                            Kind.WHY,
                            f"convergence-{verdict}",
                            f"Tolerance sweep on {r.dataset}: {words}.",
                            (_ev("convergence", r, "solver_limited_blocks"),),
                        )
                    )
    return out


def rule_certificate(view: _View) -> list[Statement]:
    """The ``bounds`` certificate read by its blocks' bound kinds: empirical (affine couplings,
    with the measured log-scale range) or certified (beside the measured constants), and the
    residual blocks whose certified ``Lip(g) >= 1``."""
    out = []
    for r in view.sets("bounds"):
        rows = _rows(r)
        found = certify_words.certificate_text(r.metrics, rows)
        if found is not None:
            kind, text = found
            paths = (
                ("empirical_blocks", "log_scale.min", "log_scale.max")
                if kind == "empirical"
                else tuple(f"{d}.{m}" for d in ("forward", "inverse") for m in ("bound", "measured", "tightness"))
            )
            out.append(
                Statement(
                    Kind.WHY,
                    f"certificate-{kind}",
                    f"On {r.dataset}: {text}.",
                    tuple(_ev("bounds", r, p) for p in paths),
                )
            )
        for text in certify_words.uncertified_texts(rows):
            out.append(
                Statement(
                    Kind.WHY,
                    "residual-uncertified",
                    _cap(text) + " (run --audit convergence).",
                    (_ev("bounds", r, "residual.lip_g_max"), _ev("bounds", r, "residual.estimate_misses")),
                )
            )
    return out


RULES: tuple[Callable[[_View], list[Statement]], ...] = (
    rule_data,
    rule_ood,
    rule_attack,
    rule_sampling,
    rule_spectrum,
    rule_first_block,
    rule_first_token,
    rule_layers_unlocated,
    rule_direction,
    rule_float64,
    rule_unexplained,
    rule_unbounded,
    rule_token_scales,
    rule_certified,
    rule_convergence,
    rule_certificate,
)
"""The rules that read the results; the remedies and re-runs then read their statements."""


def diagnose(report: Report, table: MetricTable | None = None) -> Diagnosis:
    """Every statement the rules support, ordered invertible, not, caution, breaks, why, do,
    re-run. ``table`` (the audits' metric declarations) words the metrics of audits no rule
    knows by their docs; without it they are named by their paths."""
    view = _View(report, table)
    found = [s for rule in RULES for s in rule(view)]
    found += rule_remedies(view, found)
    found += rule_rerun(view, found)
    order = list(Kind)
    return Diagnosis(tuple(sorted(found, key=lambda s: order.index(s.kind))))


def diagnosis_to_dict(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """Plain data for the JSON report (``diagnosis``)."""
    return [
        {
            "kind": s.kind.value,
            "rule": s.rule,
            "text": s.text,
            "evidence": [
                {"audit": e.audit, "set": e.dataset, "metric": e.metric, "value": e.value} for e in s.evidence
            ],
        }
        for s in diagnosis.statements
    ]
