"""The diagnosis: what a report means, derived from its results by explicit rules.

A researcher reading a report wants five answers: where the model is invertible (the data, OOD
inputs, the neighbourhood of the data, its own samples), where it is not, where in the network
it breaks, why, and what to change and re-run. :func:`diagnose` answers them with one rule per
question; a rule speaks only when the report holds evidence for it, and every statement cites
that evidence as (audit, set, metric path, value).

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

from innaudit.core.metrics import percent
from innaudit.core.results import Report, SetResult, Status, lookup

__all__ = ["Diagnosis", "Evidence", "Kind", "Statement", "diagnose", "diagnosis_to_dict"]

FD_COEFF, FD_EPS = 1e-4, 0.1
"""The paper's FD coefficient (``--fd_coeff``, ``--fd_inv_coeff``) and step; the same numbers as
``innaudit.train.regularizers.FD_COEFF`` / ``FD_EPS`` (not imported: that module needs torch)."""

TINY = 1e-6
"""A smallest singular value or coupling scale below this makes F^-1 amplify by over 1e6."""


class Kind(str, Enum):
    """Which question a statement answers, in reading order."""

    INVERTIBLE = "invertible"
    NOT_INVERTIBLE = "not-invertible"
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
    """The parts of a report the rules read: sets by audit, set roles, model path, domain."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.audits = {a.id: a for a in report.audits}
        datasets = report.run.get("datasets") or []
        self.roles = {d.get("name"): d.get("role") for d in datasets if isinstance(d, Mapping)}
        self.model = str(report.target.get("model", "MODEL"))

    def sets(self, audit: str) -> tuple[SetResult, ...]:
        found = self.audits.get(audit)
        return found.results if found is not None else ()

    def ran(self, audit: str) -> bool:
        found = self.audits.get(audit)
        return found is not None and found.status is not Status.SKIP

    def role(self, dataset: str) -> str:
        return str(self.roles.get(dataset) or "")

    def failed(self, result: SetResult) -> bool:
        return result.status.rank >= Status.FAIL.rank or bool(
            result.waiver and str(result.waiver.get("waived_status")) == "fail"
        )


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


# -- where: invertible or not ----------------------------------------------------------------
def _roundtrip_by_role(view: _View, role: str, where: str) -> list[Statement]:
    sets = [r for r in view.sets("roundtrip") if view.role(r.dataset) == role]
    good = [r for r in sets if not view.failed(r) and _num(r, "nonfinite_fraction") == 0.0]
    bad = [r for r in sets if view.failed(r)]
    out = []
    if good:
        worst = max((_num(r, "rel_error_l2.max") or 0.0) for r in good)
        count = sum(int(_num(r, "n") or 0) for r in good)
        out.append(
            Statement(
                Kind.INVERTIBLE,
                f"roundtrip-{role}",
                f"{where}: {_names(good)}: all {count} round trips finite, max relative error {worst:.2g}.",
                tuple(_ev("roundtrip", r, p) for r in good for p in ("nonfinite_fraction", "rel_error_l2.max")),
            )
        )
    if bad:
        parts = [f"{r.dataset} {percent(_num(r, 'nonfinite_fraction') or 0.0)}" for r in bad]
        out.append(
            Statement(
                Kind.NOT_INVERTIBLE,
                f"roundtrip-{role}",
                f"{where}: round trips non-finite on {', '.join(parts)}.",
                tuple(_ev("roundtrip", r, "nonfinite_fraction") for r in bad),
            )
        )
    return out


def rule_data(view: _View) -> list[Statement]:
    """Round trips on the in-distribution sets: is the model invertible where it is used?"""
    return _roundtrip_by_role(view, "in-distribution", "On the data")


def rule_ood(view: _View) -> list[Statement]:
    """Round trips on the OOD sets: is it invertible away from the data?"""
    return _roundtrip_by_role(view, "ood", "Off the data (OOD)")


def rule_attack(view: _View) -> list[Statement]:
    """The gradient attack: is it invertible within half a bin of the data?"""
    out = []
    for r in view.sets("attack"):
        # a non-finite point may also count as above the threshold (an Inf error): the larger share
        hit = max(_num(r, "nonfinite_fraction") or 0.0, _num(r, "fraction_above_threshold") or 0.0)
        rand = max(
            _num(r, "random_search.nonfinite_fraction") or 0.0, _num(r, "random_search.fraction_above_threshold") or 0.0
        )
        eps, n = _num(r, "epsilon"), int(_num(r, "n") or 0)
        ball = f"within {eps:.3g} (L-inf) of {n} points of {r.dataset}" if eps else f"near {r.dataset}"
        evidence = tuple(
            _ev("attack", r, p)
            for p in ("nonfinite_fraction", "fraction_above_threshold", "random_search.nonfinite_fraction", "epsilon")
        )
        if view.failed(r):
            out.append(
                Statement(
                    Kind.NOT_INVERTIBLE,
                    "attack",
                    f"Near the data: a gradient search {ball} breaks {percent(hit)} of them "
                    f"(random search: {percent(rand)}).",
                    evidence,
                )
            )
        elif r.status is Status.PASS:
            out.append(
                Statement(
                    Kind.INVERTIBLE, "attack", f"Near the data: a gradient search {ball} finds no failure.", evidence
                )
            )
    return out


def rule_sampling(view: _View) -> list[Statement]:
    """Round trips of the model's own samples."""
    sets = list(view.sets("sampling"))
    bad = [r for r in sets if view.failed(r)]
    good = [r for r in sets if r.status is Status.PASS]
    out = []
    if good:
        out.append(
            Statement(
                Kind.INVERTIBLE,
                "sampling",
                f"On its own samples: {_names(good)}.",
                tuple(_ev("sampling", r, "nonfinite_fraction") for r in good),
            )
        )
    if bad:
        parts = ", ".join(f"{r.dataset} {percent(_num(r, 'nonfinite_fraction') or 0.0)}" for r in bad)
        out.append(
            Statement(
                Kind.NOT_INVERTIBLE,
                "sampling",
                f"On its own samples: non-finite on {parts}.",
                tuple(_ev("sampling", r, "nonfinite_fraction") for r in bad),
            )
        )
    return out


# -- where it breaks -------------------------------------------------------------------------
def rule_first_block(view: _View) -> list[Statement]:
    """The first failing block per set, from ``layers`` (sets grouped by block)."""
    by_block: dict[str, list[SetResult]] = {}
    for r in view.sets("layers"):
        culprit = lookup(r.metrics, "culprit")
        if isinstance(culprit, str) and culprit and (_num(r, "culprit_index") or 0) >= 0:
            by_block.setdefault(culprit, []).append(r)
    if not by_block:
        return []
    total = max(int(_num(r, "blocks") or 0) for rs in by_block.values() for r in rs)
    parts = [f"{block} on {_names(rs)}" for block, rs in by_block.items()]
    return [
        Statement(
            Kind.BREAKS,
            "first-block",
            f"First failing block (of {total}): {'; '.join(parts)}.",
            tuple(_ev("layers", r, "culprit") for rs in by_block.values() for r in rs),
        )
    ]


def rule_direction(view: _View) -> list[Statement]:
    """Forward overflow (the latent is already non-finite) vs inverse explosion (only F^-1 is)."""
    forward, inverse, evidence = [], [], []
    for r in view.sets("roundtrip"):
        total, latent = _num(r, "nonfinite_fraction"), _num(r, "latent_nonfinite_fraction")
        if not total or latent is None:
            continue
        if latent > 0:
            forward.append(f"{r.dataset} {percent(latent)}")
        if total - latent > 0:
            inverse.append(f"{r.dataset} {percent(total - latent)}")
        evidence += [_ev("roundtrip", r, "latent_nonfinite_fraction"), _ev("roundtrip", r, "nonfinite_fraction")]
    parts = []
    if forward:
        parts.append(f"the forward pass already overflows (non-finite latent) on {', '.join(forward)}")
    if inverse:
        parts.append(f"the inverse explodes from a finite latent on {', '.join(inverse)}")
    if not parts:
        return []
    text = "; ".join(parts)
    return [Statement(Kind.BREAKS, "direction", text[0].upper() + text[1:] + ".", tuple(evidence))]


def rule_float64(view: _View) -> list[Statement]:
    """The float64 re-run: precision loss (float64 is finite) or a real singularity (it is not)."""
    out = []
    for r in view.sets("roundtrip"):
        f32, f64 = _num(r, "nonfinite_fraction"), _num(r, "float64.nonfinite_fraction")
        if f64 is None or not f32:
            continue
        evidence = (_ev("roundtrip", r, "nonfinite_fraction"), _ev("roundtrip", r, "float64.nonfinite_fraction"))
        if f64 == 0.0:
            text = (
                f"{r.dataset}: every float64 round trip is finite ({percent(f32)} in float32): "
                "float32 precision is lost, the map itself is invertible there."
            )
        else:
            text = (
                f"{r.dataset}: float64 round trips are non-finite too ({percent(f64)}): the map is "
                "ill-conditioned there, more precision does not fix it."
            )
        out.append(Statement(Kind.BREAKS, "float64", text, evidence))
    return out


def rule_first_token(view: _View) -> list[Statement]:
    """Autoregressive blocks (``tokens``): the block and token range where the inverse chain's
    accumulated error leaves rounding, per set (sets grouped by place), and Jacobi solves
    stopped at their cap."""
    by_place: dict[str, list[SetResult]] = {}
    capped: list[SetResult] = []
    for r in view.sets("tokens"):
        where = lookup(r.metrics, "where")
        if isinstance(where, str) and where:
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
            f"token; a reaches {top:.3g} (|a| > 5 for {share:.2%} of the log-scales) on {_names(failing)}.",
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
    audit = view.audits.get("bounds")
    message = audit.message if audit is not None else ""
    return message if "affine coupling" in message else ""


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
            "affine coupling has no global Lipschitz bound (F^-1 divides by the scale, so 1 / min |scale| is unbounded)"
        )
    if scales:
        parts.append(f"the coupling scale reaches {_grouped(scales, 'scale_min')}")
    if sigma:
        parts.append(f"local sigma_min(J_F) reaches {_grouped(sigma, 'forward.sv_min.min')}")
    evidence = [Evidence("bounds", "", "message", reason)] if reason else []
    evidence += [_ev("layers", r, "scale_min") for r in scales]
    evidence += [_ev("spectrum", r, "forward.sv_min.min") for r in sigma]
    text = "; ".join(parts)
    return [Statement(Kind.WHY, "unbounded-inverse", text[0].upper() + text[1:] + ".", tuple(evidence))]


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


def rule_remedies(view: _View, found: list[Statement]) -> list[Statement]:
    """The paper's remedies that the evidence calls for, most specific first."""
    rules = _kinds([s for s in found if s.kind in (Kind.NOT_INVERTIBLE, Kind.WHY)])
    bad_where = [s for s in found if s.kind is Kind.NOT_INVERTIBLE]
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
    global_need = [s for s in bad_where if s.rule in ("roundtrip-ood", "sampling")]
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
    if "roundtrip-ood" in rules and not {"roundtrip-in-distribution", "attack"} & set(rules):
        domain = lookup(view.report.target, "info.domain") or {}
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
    out.append(
        Statement(
            Kind.RERUN,
            "confirm",
            f"After a fix: innaudit run NEW.pt with the same audits and --seed "
            f"{view.report.run.get('seed')} -o json=new.json, then innaudit compare "
            "THIS.json new.json.",
        )
    )
    return out


RULES: tuple[Callable[[_View], list[Statement]], ...] = (
    rule_data,
    rule_ood,
    rule_attack,
    rule_sampling,
    rule_first_block,
    rule_first_token,
    rule_direction,
    rule_float64,
    rule_unbounded,
    rule_token_scales,
    rule_certified,
)
"""The rules that read the results; the remedies and re-runs then read their statements."""


def diagnose(report: Report) -> Diagnosis:
    """Every statement the rules support, ordered invertible, not, breaks, why, do, re-run."""
    view = _View(report)
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
