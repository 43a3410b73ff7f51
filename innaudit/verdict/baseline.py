"""Baselines: every metric of a report held against the same metric of an earlier report.

Each numeric metric that an audit declares with a direction (:mod:`innaudit.core.metrics`; every numeric
leaf but ``n``, higher worse, for an audit this version does not know) is matched by (audit id,
set, metric path) and classified:

- ``unchanged`` when ``|new - base| <= tol`` with ``tol = max(|base| * rel_tol, abs_tol,
  floor)`` (evidently's ApproxValue, with a floor), or both are NaN, or both are the same
  infinity;
- ``regressed`` when it moved beyond ``tol`` in the worse direction, or became NaN;
- ``improved`` when it moved beyond ``tol`` in the better direction, or stopped being NaN;
- ``new`` / ``missing`` when only the new / only the base report has it (Qodana's buckets).

The floor is the resolution of the precision the metric was computed in
(:func:`resolution`): an error or gap measured in float32 (the run's dtype, or the precision
its path names: ``float16.rel_error_l2.max``) cannot be told apart from another closer than
:data:`RESOLUTION_ULPS` machine epsilons of that precision (relative errors), or that many times
the norm of a full-range input (absolute errors), so such moves are ``unchanged``: a max over
samples of rounding-level errors moves by tens of percent between two sound models.

The direction is the audit's declaration: a smallest singular value falling from 1e-1 to 1e-5
regressed; an error growing regressed. Metrics declared ``neither`` (sample counts, settings) are
not compared.

Reading a regression: the checkpoint (or the code, or the environment: compare the two
reports' ``run`` blocks) got numerically worse on that metric, by more than the tolerance. With
``--fail-on-regression`` any regression fails the gate (exit 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from innaudit.core.errors import UsageError
from innaudit.core.metrics import Direction, MetricTable, declared
from innaudit.core.results import Change, Comparison, Delta, Report, leaves

__all__ = ["ABS_TOL", "REL_TOL", "RESOLUTION_ULPS", "classify", "compare", "resolution"]

REL_TOL = 0.1
"""Default relative tolerance: 10% of the base value."""
ABS_TOL = 1e-6
"""Default absolute tolerance: about ten float32 rounding steps of a unit-sized value."""


RESOLUTION_ULPS = 16
"""Machine epsilons of its precision below which a move of an error metric is rounding: the
rounding a round trip accumulates over a network's layers is a few to tens of epsilons."""

EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
"""Machine epsilon of each precision by name."""

RELATIVE_ERRORS = {"rel_error_l2", "rel_error", "block_rel_error", "chain_rel_error", "reference_gap"}
"""Metric quantities that are errors relative to the size of what was computed."""
ABSOLUTE_ERRORS = {"error_l2", "latent_error"}
"""Metric quantities that are absolute errors of inputs (L2 norm over the input's elements)."""
ERROR_AUDITS = {"roundtrip", "sampling", "precision", "attack", "layers", "logdet", "grid"}
"""Audits whose errors are errors of the model's own computation (not of gradients)."""


def _precision(path: str, dtype: str) -> str:
    """The precision a metric was computed in: the one its path starts with, else the run's."""
    head = path.split(".")[0].removeprefix("autocast_")
    return head if head in EPS else dtype if dtype in EPS else "float32"


def resolution(audit: str, path: str, dtype: str = "float32", norm: float = 1.0) -> float:
    """The smallest move of ``path`` that is not rounding: :data:`RESOLUTION_ULPS` epsilons of
    its precision for a relative error, times ``norm`` (a full-range input's L2 norm) for an
    absolute one; 0 for every other metric (counts, conditions, singular values)."""
    if audit not in ERROR_AUDITS:
        return 0.0
    head, _, stat = path.rpartition(".")
    quantity = (head if stat in ("min", "median", "p99", "max", "mean") else path).split(".")[-1]
    eps = EPS[_precision(path, dtype)]
    if quantity in RELATIVE_ERRORS:
        return RESOLUTION_ULPS * eps
    if quantity in ABSOLUTE_ERRORS:
        return RESOLUTION_ULPS * eps * norm
    return 0.0


def classify(
    base: float,
    new: float,
    rel_tol: float = REL_TOL,
    abs_tol: float = ABS_TOL,
    higher_better: bool = False,
    floor: float = 0.0,
) -> Change:
    """Classify one metric's move: ``tol = max(|base| * rel_tol, abs_tol, floor)``; NaN is the worst."""
    if math.isnan(base) or math.isnan(new):
        if math.isnan(base) and math.isnan(new):
            return Change.UNCHANGED
        return Change.REGRESSED if math.isnan(new) else Change.IMPROVED
    if base == new:  # also the same infinity
        return Change.UNCHANGED
    tol = abs_tol if math.isinf(base) else max(abs(base) * rel_tol, abs_tol, floor)
    if not math.isinf(new) and not math.isinf(base) and abs(new - base) <= tol:
        return Change.UNCHANGED
    worse = new < base if higher_better else new > base
    return Change.REGRESSED if worse else Change.IMPROVED


def _leaves(metrics: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """The numeric leaves of nested metrics (strings, booleans and lists are not compared)."""
    for path, value in leaves(metrics):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield path, float(value)


def _direction(table: MetricTable, audit: str, path: str) -> Direction | None:
    """The declared direction; higher worse for an audit the table does not know (``n`` aside)."""
    if audit not in table:
        return None if path == "n" else Direction.HIGHER_WORSE
    metric = declared(table, audit, path)
    return None if metric is None or metric.direction is Direction.NEITHER else metric.direction


def _numbers(report: Report, table: MetricTable) -> dict[tuple[str, str, str], tuple[float, Direction]]:
    out: dict[tuple[str, str, str], tuple[float, Direction]] = {}
    for audit in report.audits:
        for r in audit.results:
            for path, value in _leaves(r.metrics):
                direction = _direction(table, audit.id, path)
                if direction is not None:
                    out[(audit.id, r.dataset, path)] = (value, direction)
    return out


def compare(
    base: Report,
    new: Report,
    table: MetricTable,
    *,
    rel_tol: float = REL_TOL,
    abs_tol: float = ABS_TOL,
    gate: bool = False,
    base_name: str | None = None,
) -> Comparison:
    """Classify every metric of ``new`` against ``base`` (see the module docstring).

    ``table`` holds the audits' metric declarations (``innaudit.audits.metric_table()``).
    """
    if base.schema_version != new.schema_version:
        raise UsageError(
            f"the baseline has schema_version {base.schema_version}, the report "
            f"{new.schema_version}; re-create the baseline with this innaudit"
        )
    if rel_tol < 0 or abs_tol < 0 or math.isnan(rel_tol) or math.isnan(abs_tol):
        raise UsageError(f"tolerances must be >= 0; got rel {rel_tol}, abs {abs_tol}")
    old, now = _numbers(base, table), _numbers(new, table)
    dtype, norm = str(new.run.dtype or base.run.dtype or "float32"), _full_range_norm(new)
    deltas = []
    for key in [*now, *(k for k in old if k not in now)]:
        up = (now.get(key) or old[key])[1] is Direction.HIGHER_BETTER
        if key not in old:
            change = Change.NEW
        elif key not in now:
            change = Change.MISSING
        else:
            floor = resolution(key[0], key[2], dtype, norm)
            change = classify(old[key][0], now[key][0], rel_tol, abs_tol, up, floor)
        deltas.append(Delta(*key, _value(old.get(key)), _value(now.get(key)), change, up))
    deltas.sort(key=lambda d: d.change.rank)  # stable: report order within a bucket
    name = base_name if base_name is not None else str(base.target.model or "baseline")
    return Comparison(name, rel_tol, abs_tol, gate, tuple(deltas))


def _full_range_norm(report: Report) -> float:
    """``sqrt(D) * (high - low)`` of the model's input domain (1 when the report lacks it)."""
    domain = (report.target.info or {}).get("domain") or {}
    shape, low, high = domain.get("shape"), domain.get("low"), domain.get("high")
    if not isinstance(shape, list) or not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return 1.0
    return math.sqrt(math.prod(int(s) for s in shape)) * max(float(high) - float(low), 1e-12)


def _value(entry: tuple[float, Direction] | None) -> float | None:
    return None if entry is None else entry[0]
