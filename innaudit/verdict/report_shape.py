"""Holding a saved JSON report to the shape innaudit writes, before anything reads it.

``innaudit render``, ``compare`` and ``run --baseline`` read reports from disk, and a report
file is input like any other: it may have been edited, truncated or crafted. :func:`check_shape`
walks the envelope ``report.schema.json`` describes (the fields the renderers and the baseline
read, with their types) and refuses the first field of another type, naming its path
(``audits[0].results[1].dataset``), so a bad file is one line ("not an innaudit report"), never
a crash in a renderer. Numbers must be finite where innaudit writes finite numbers (durations,
tolerances, interval bounds); metric values may be ``"nan"``, ``"inf"`` or ``"-inf"``, and a
declared rate (a fraction of samples) must lie in [0, 1] or be NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from innaudit.config.choices import FAIL_ON
from innaudit.core.errors import UsageError, shorten_middle
from innaudit.core.results import Change, Status

__all__ = ["MAX_DEPTH", "check_shape"]

MAX_DEPTH = 64
"""Deepest nesting of metrics accepted (innaudit writes a handful of levels)."""

_STATUSES = {s.value for s in Status}
_CHANGES = {c.value for c in Change}
_NONFINITE = ("nan", "inf", "-inf")


def _bad(where: str, expected: str, value: Any) -> UsageError:
    return UsageError(f"{shorten_middle(where, 120)} is {type(value).__name__}; expected {expected}")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(where, "a string", value)
    return value


def _each_str(value: Any, where: str) -> None:
    _str(value, where)


def _opt_str(value: Any, where: str) -> None:
    if value is not None:
        _str(value, where)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(where, "an object", value)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(where, "a list", value)
    return value


def _number(value: Any, where: str, finite: bool = False) -> float:
    """A JSON number, or (unless ``finite``) one of the strings innaudit writes for NaN / Inf."""
    if isinstance(value, str) and value in _NONFINITE and not finite:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(where, "a number" + ("" if finite else ' (or "nan", "inf", "-inf")'), value)
    if not math.isfinite(value) and finite:
        raise UsageError(f"{where} is {value}; expected a finite number")
    if isinstance(value, int) and abs(value) > 1 << 63:
        raise UsageError(f"{where} is an integer of {len(str(value))} digits; expected a 64-bit number")
    return float(value)


def _opt_number(value: Any, where: str) -> None:
    if value is not None:
        _number(value, where)


def _status(value: Any, where: str) -> None:
    if value not in _STATUSES:
        raise UsageError(f"{where} is {value!r:.40}; expected one of {', '.join(sorted(_STATUSES))}")


def _items(value: Any, where: str, check: Callable[[Any, str], None]) -> None:
    for i, item in enumerate(_list(value, where)):
        check(item, f"{where}[{i}]")


def _tree(value: Any, where: str, depth: int = 0) -> None:
    """Metrics and series: objects, lists, numbers, strings, booleans, null; bounded depth."""
    if depth > MAX_DEPTH:
        raise UsageError(
            f"{shorten_middle(where, 120)} is nested deeper than {MAX_DEPTH} levels; expected innaudit's metrics"
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            _tree(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _tree(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _number(value, where)
    elif not isinstance(value, (str, bool)) and value is not None:
        raise _bad(where, "a number, string, boolean, list or object", value)


def _rates(metrics: Mapping[str, Any], audit: str, where: str, rates: Callable[[str, str], bool]) -> None:
    """A declared rate (share of samples) lies in [0, 1] or is NaN."""
    from innaudit.core.results import leaves

    for path, value in leaves(metrics):
        if rates(audit, path) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            number = _number(value, f"{where}.{path}")
            if not (math.isnan(number) or 0.0 <= number <= 1.0):
                raise UsageError(f"{where}.{path} is {value!r:.40}, a share of samples; expected a value in [0, 1]")


def _check(value: Any, where: str) -> None:
    data = _mapping(value, where)
    _str(data.get("metric"), f"{where}.metric")
    _number(data.get("value"), f"{where}.value")
    _opt_number(data.get("warn"), f"{where}.warn")
    _opt_number(data.get("fail"), f"{where}.fail")
    _status(data.get("status"), f"{where}.status")
    _opt_str(data.get("direction"), f"{where}.direction")


def _interval(value: Any, where: str) -> None:
    pair = _list(value, where)
    if len(pair) != 2:
        raise UsageError(f"{where} holds {len(pair)} numbers; expected [low, high]")
    for i, bound in enumerate(pair):
        _number(bound, f"{where}[{i}]", finite=True)


def _waiver(value: Any, where: str) -> None:
    data = _mapping(value, where)
    _str(data.get("reason"), f"{where}.reason")
    _str(data.get("expires"), f"{where}.expires")
    if not isinstance(data.get("expired"), bool):
        raise _bad(f"{where}.expired", "true or false", data.get("expired"))
    _status(data.get("waived_status"), f"{where}.waived_status")


def _set(value: Any, where: str) -> None:
    data = _mapping(value, where)
    _str(data.get("dataset"), f"{where}.dataset")
    _status(data.get("status"), f"{where}.status")
    _tree(_mapping(data.get("metrics"), f"{where}.metrics"), f"{where}.metrics")
    _items(data.get("checks", []), f"{where}.checks", _check)
    _str(data.get("message", ""), f"{where}.message")
    _tree(_mapping(data.get("series", {}), f"{where}.series"), f"{where}.series")
    if data.get("waiver") is not None:
        _waiver(data["waiver"], f"{where}.waiver")
    for key, pair in _mapping(data.get("intervals", {}), f"{where}.intervals").items():
        _interval(pair, f"{where}.intervals.{key}")


def _audit(value: Any, where: str, rates: Callable[[str, str], bool]) -> None:
    data = _mapping(value, where)
    audit = _str(data.get("id"), f"{where}.id")
    _str(data.get("title", audit), f"{where}.title")
    _status(data.get("status"), f"{where}.status")
    _str(data.get("message"), f"{where}.message")
    _number(data.get("duration_s"), f"{where}.duration_s", finite=True)
    _int(data.get("seed", 0), f"{where}.seed")
    _opt_str(data.get("error"), f"{where}.error")
    _items(data.get("results"), f"{where}.results", _set)
    for i, result in enumerate(data["results"]):
        _n(result["metrics"], f"{where}.results[{i}].metrics")
        _rates(result["metrics"], audit, f"{where}.results[{i}].metrics", rates)


def _delta(value: Any, where: str) -> None:
    data = _mapping(value, where)
    for key in ("audit", "set", "metric"):
        _str(data.get(key), f"{where}.{key}")
    _opt_number(data.get("base"), f"{where}.base")
    _opt_number(data.get("new"), f"{where}.new")
    if data.get("change") not in _CHANGES:
        raise UsageError(f"{where}.change is {data.get('change')!r:.40}; expected one of {', '.join(sorted(_CHANGES))}")


def _baseline(value: Any, where: str) -> None:
    data = _mapping(value, where)
    _str(data.get("base"), f"{where}.base")
    for key in ("rel_tol", "abs_tol"):
        if _number(data.get(key), f"{where}.{key}", finite=True) < 0:
            raise UsageError(f"{where}.{key} is negative; expected a tolerance >= 0")
    _items(data.get("deltas"), f"{where}.deltas", _delta)


def _int(value: Any, where: str, low: int = -(1 << 63)) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1 << 63:
        raise _bad(where, f"an integer >= {low}" if low > -(1 << 63) else "an integer", value)


def _dataset(value: Any, where: str) -> None:
    data = _mapping(value, where)
    for key in ("name", "spec", "role"):
        _opt_str(data.get(key), f"{where}.{key}")
    if "size" in data:
        _int(data["size"], f"{where}.size", 0)


def _planned(value: Any, where: str) -> None:
    _str(_mapping(value, where).get("id"), f"{where}.id")


def _run(run: Mapping[str, Any]) -> None:
    """The ``run`` block: what the renderers and the diagnosis read, typed."""
    _tree(run, "run")
    _int(run.get("seed", 0), "run.seed")
    for key in ("dtype", "device", "started_at"):
        _opt_str(run.get(key), f"run.{key}")
    if run.get("duration_s") is not None:
        _number(run["duration_s"], "run.duration_s", finite=True)
    _mapping(run.get("config", {}), "run.config")
    _items(run.get("datasets", []), "run.datasets", _dataset)
    if run.get("plan") is not None:
        plan = _mapping(run["plan"], "run.plan")
        _items(plan.get("audits", []), "run.plan.audits", _planned)


def _target(target: Mapping[str, Any]) -> None:
    """The ``target`` block, typed where it is read."""
    _tree(target, "target")
    _str(target.get("model"), "target.model")
    for key in ("sha256", "loader"):
        _opt_str(target.get(key), f"target.{key}")
    _items(target.get("latent_shape", []), "target.latent_shape", lambda v, w: _int(v, w, 0))
    info = _mapping(target.get("info", {}), "target.info")
    domain = _mapping(info.get("domain", {}), "target.info.domain")
    for key in ("low", "high"):
        _opt_number(domain.get(key), f"target.info.domain.{key}")


def _n(metrics: Mapping[str, Any], where: str) -> None:
    """A set's sample count ``n`` is a whole number."""
    if "n" in metrics:
        _int(metrics["n"], f"{where}.n", 0)


def check_shape(data: Mapping[str, Any], rates: Callable[[str, str], bool] = lambda audit, path: False) -> None:
    """Refuse a report envelope that innaudit could not have written (see the module docstring).

    ``rates(audit, path)`` says whether a metric is a declared rate (a share in [0, 1]).

    Raises:
        UsageError: the first field of the wrong type or out of range, by its path.
    """
    tool = _mapping(data.get("tool"), "tool")
    for key, value in tool.items():
        _str(value, f"tool.{key}")
    _run(_mapping(data.get("run"), "run"))
    _target(_mapping(data.get("target"), "target"))
    summary = _mapping(data.get("summary"), "summary")
    if summary.get("fail_on", "fail") not in FAIL_ON:
        raise UsageError(f"summary.fail_on is {summary.get('fail_on')!r:.40}; expected 'warn' or 'fail'")
    for i, audit in enumerate(_list(data.get("audits"), "audits")):
        _audit(audit, f"audits[{i}]", rates)
    _items(data.get("errors", []), "errors", _each_str)
    _items(data.get("warnings", []), "warnings", _each_str)
    if data.get("baseline") is not None:
        _baseline(data["baseline"], "baseline")
