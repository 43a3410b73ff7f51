"""The words of the diagnosis for iterative inverses (``convergence``) and certificates (``bounds``).

Pure functions of a result's plain data (metrics, series rows), so the diagnosis' rules only
wrap them into statements. A block's certificate is read by its bound ``kind``
(:class:`~innaudit.core.bound_kind.BoundKind`) and ``certificate`` fields, never from prose.

- Convergence: a sample whose inverse did not converge is a failure, even when the library
  returned a finite number; the cause is named per block: the iteration cap hit, or a residual
  ``||F(x_hat) - z|| / ||z||`` above the limit at exit. The tolerance sweep (the block's own
  tolerance, then 10x and 100x tighter) says whose the error is: the solver's when it falls with
  the tolerance, the model's when it does not (Behrmann et al., ICML 2019,
  https://arxiv.org/abs/1811.00995: the fixed point converges when ``Lip(g) < 1``).
- Certificates: certified (a global bound on all of ``R^d``) or empirical (an affine coupling:
  no global bound, the measured log-scale range instead); a residual block whose certified
  ``Lip(g) >= 1`` has no convergence guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from innaudit.core.bound_kind import AFFINE_KINDS, BoundKind
from innaudit.core.metrics import percent

__all__ = [
    "affine_rows",
    "certificate_text",
    "nonconvergence_text",
    "sweep_texts",
    "uncertified_texts",
]

_AFFINE = {k.value for k in AFFINE_KINDS}


def _g(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def nonconvergence_text(metrics: Mapping[str, Any], blocks: Sequence[Mapping[str, Any]], limit: float | None) -> str:
    """``12.5 % of 16 samples did not converge: block 3:Residual stopped at its cap of 5 iterations
    on 2; residual at exit up to 0.04 (limit 0.01)``; empty when every sample converged."""
    fraction = float(metrics.get("nonconverged_fraction") or 0.0)
    failed = [b for b in blocks if b.get("failure")]
    raised = float(metrics.get("unmeasured_blocks") or 0)
    if fraction <= 0 and not failed and raised <= 0:
        return ""
    parts = [] if failed or raised <= 0 else [f"the solver of {_g(raised)} block(s) raised"]
    if fraction > 0:
        parts.insert(
            0,
            f"{percent(fraction)} of {metrics.get('n')} samples did not converge (a finite x_hat does not count)",
        )
    for b in blocks:
        if not int(b.get("nonconverged") or 0):
            continue
        why = []
        if int(b.get("cap_hits") or 0):
            why.append(f"stopped at its cap of {b.get('max_iter')} iterations on {b.get('cap_hits')}")
        residual = b.get("residual_max")
        if isinstance(residual, (int, float)) and (limit is None or not residual <= limit):
            shown = f" (limit {_g(limit)})" if limit is not None else ""
            why.append(f"residual ||F(x_hat) - z|| / ||z|| at exit up to {_g(residual)}{shown}")
        method = f" ({b.get('method')})" if b.get("method") else ""
        parts.append(f"block {b.get('name')}{method}: {'; '.join(why) or 'the solver said not converged'}")
    parts += [f"block {b.get('name')}: the solver raised ({b.get('failure')})" for b in failed]
    return "; ".join(parts)


def sweep_texts(sweep: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(verdict, text)`` per block of the tolerance sweep whose verdict is ``solver`` or
    ``model``: the error against the tolerance, and what it means."""
    out = []
    for row in sweep:
        verdict, rows = row.get("verdict"), list(row.get("rows") or [])
        if verdict not in ("solver", "model") or len(rows) < 2:
            continue
        first, last = rows[0], rows[-1]
        figures = (
            f"error {_g(first.get('error_max'))} at its own tolerance {_g(first.get('tolerance'))}, "
            f"{_g(last.get('error_max'))} at {_g(last.get('factor'))}x tighter"
        )
        if verdict == "solver":
            text = (
                f"block {row.get('block')}: the error is the solver's ({figures}): a tighter tolerance "
                "or a higher iteration cap fixes it"
            )
        else:
            text = (
                f"block {row.get('block')}: the error is the model's ({figures}): the solver is not "
                "the cause; check its certified Lip(g) (--audit bounds)"
            )
        out.append((verdict, text))
    return out


def affine_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The blocks whose bound kind is an affine coupling's (no global bound)."""
    return [r for r in rows if r.get("kind") in _AFFINE]


def _kinds(rows: Sequence[Mapping[str, Any]]) -> str:
    """``affine scale unbounded, affine scale bounded``: the kinds, in order of appearance."""
    return ", ".join(str(k).replace("_", " ") for k in dict.fromkeys(r.get("kind") for r in rows))


def certificate_text(metrics: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """``("empirical" | "certified", text)`` for one set of the ``bounds`` audit: an empirical
    certificate names its blocks' kinds and the measured log-scale range; a certified one its
    bounds beside the measured constants (tightness = certified / measured)."""
    empirical = [r for r in rows if r.get("certificate") == "empirical"]
    if empirical:
        low, high = (metrics.get("log_scale") or {}).get("min"), (metrics.get("log_scale") or {}).get("max")
        measured = (
            f"measured log-scale range [{_g(low)}, {_g(high)}]"
            if isinstance(low, (int, float)) and not math.isnan(low)
            else "log-scale range not measured"
        )
        return (
            "empirical",
            f"the Lipschitz certificate is empirical, not a guarantee: blocks without a global bound "
            f"({_kinds(empirical)}); {measured}",
        )
    forward, inverse = metrics.get("forward") or {}, metrics.get("inverse") or {}
    bounds = [forward.get("bound"), inverse.get("bound")]
    if not all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds):
        return None
    text = (
        f"certified Lip(F) <= {_g(forward.get('bound'))} (measured {_g(forward.get('measured'))}, "
        f"tightness {_g(forward.get('tightness'))}x) and Lip(F^-1) <= {_g(inverse.get('bound'))} "
        f"(measured {_g(inverse.get('measured'))}, tightness {_g(inverse.get('tightness'))}x) on all of R^d"
    )
    return "certified", text + _where_used(forward, inverse)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _where_used(forward: Mapping[str, Any], inverse: Mapping[str, Any]) -> str:
    """The domain-box certificate, the search's witness and the local certificate, each named."""
    parts = []
    if _finite(forward.get("domain")) or _finite(inverse.get("domain")):
        parts.append(
            f"on the model's domain box (bound propagation) Lip(F) <= {_g(forward.get('global'))} and "
            f"sup ||J_F^-1|| <= {_g(inverse.get('global'))}"
        )
    if _finite(forward.get("witness")):
        parts.append(
            f"a search found local constants {_g(forward.get('witness'))} (forward) and "
            f"{_g(inverse.get('witness'))} (inverse), so the global constants are at least these"
        )
    if _finite(forward.get("local")):
        parts.append(
            f"within each sample's ball the local certificate is {_g(forward.get('local'))} forward "
            f"({_g(forward.get('local_tightness'))}x the measured) and {_g(inverse.get('local'))} inverse"
        )
    return "".join(f"; {p}" for p in parts)


def uncertified_texts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The residual blocks whose certified ``Lip(g) >= 1``, with their largest layer, and the
    library's estimate where it says ``< 1``."""
    out = []
    for r in rows:
        lip = r.get("lip_g")
        if r.get("kind") != BoundKind.RESIDUAL.value or not isinstance(lip, (int, float)) or lip < 1.0:
            continue
        text = f"block {r.get('name')}: certified Lip(g) = {_g(lip)} >= 1, its fixed-point inverse is not guaranteed to converge"
        if r.get("worst_layer"):
            text += f" (largest layer {r.get('worst_layer')})"
        estimate = r.get("lip_g_estimate")
        if isinstance(estimate, (int, float)) and estimate < 1.0:
            text += f"; the library's own estimate says {_g(estimate)} < 1"
        out.append(text)
    return out
