"""Run configuration: frozen dataclasses, YAML (``yaml.safe_load``), validation, precedence.

Precedence: command-line flags, then the YAML file (``--config``), then built-in defaults.
Unknown keys are errors with a "did you mean" hint: for a gate, a typo that silently falls back
to a default is worse than a failure.

YAML layout (``innaudit init`` writes a commented copy)::

    seed: 0                 # every random draw derives from it
    samples: 10000          # cap per data set
    batch_size: auto        # or a number; auto: the largest that fits free memory (at most 500)
    budget: null            # a time budget (90s, 10m, 1h): samples are sized to fit it
    threads: null           # torch's intra-op threads (default: OMP_NUM_THREADS, else measured)
    device: cpu
    float64_check: false    # re-run round trips in float64
    default_ood: true       # with no ood sets given, run the noise battery
    fail_on: fail           # or warn
    allow_mutation: false   # audit a model that rewrites its parameters/buffers while audited
    range: null             # data range [LOW, HIGH] of a model that declares none (default: from --data)
    levels: null            # quantization levels of such a model (default: inferred from --data)
    data: null              # in-distribution SPEC (default: the model's own test set)
    ood: []                 # [NAME=]SPEC list (default: uniform, gaussian, rademacher)
    audits: []              # run only these ids (default: all)
    skip: []                # leave these ids out
    roundtrip:              # one section per audit id
      thresholds:
        nonfinite_fraction: {fail: 0}
        rel_error_l2.max: {warn: 1.0e-4, fail: 1.0e-2}
      sets:                 # per-set overrides
        uniform:
          thresholds: {rel_error_l2.max: {fail: 1.0}}
    sampling:
      temperatures: [1.0, 0.7]
    waivers:                # dated exceptions to a gate (innaudit.config.waivers)
      - {audit: roundtrip, set: rademacher, reason: "...", expires: 2026-06-30}
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

from innaudit.config.choices import FAIL_ON
from innaudit.config.waivers import Waiver, parse_waivers
from innaudit.core.errors import ConfigError, did_you_mean, short_repr
from innaudit.core.metrics import STATS, Direction, Metric, covers, direction_of
from innaudit.core.results import Status

__all__ = [
    "OPTIONS",
    "AuditSettings",
    "AuditSpec",
    "Config",
    "Threshold",
    "check_threads",
    "configured",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class Threshold:
    """Two-level gate on one metric: beyond ``warn`` warns, beyond ``fail`` fails.

    "Beyond" follows the metric's declared direction (:mod:`innaudit.core.metrics`): above the limit
    for an error, below it for a smallest singular value.
    """

    warn: float | None = None
    fail: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """``{"warn": ..., "fail": ...}``."""
        return {"warn": self.warn, "fail": self.fail}


@dataclass(frozen=True)
class AuditSpec:
    """What the configuration needs to know about an audit: its id, defaults and metrics."""

    id: str
    thresholds: Mapping[str, Threshold]
    options: Mapping[str, Any]
    metrics: tuple[Metric, ...]
    check: Callable[[Mapping[str, Any]], None] | None = None
    """Refuses impossible option values (the audit's ``check_options``), before any audit runs."""


@dataclass(frozen=True)
class AuditSettings:
    """The effective settings of one audit: thresholds (per set where overridden) and options."""

    thresholds: Mapping[str, Threshold]
    options: Mapping[str, Any]
    sets: Mapping[str, Mapping[str, Threshold]] = field(default_factory=dict)

    def thresholds_for(self, dataset: str) -> Mapping[str, Threshold]:
        """The thresholds that apply to ``dataset``: the audit's, with the set's overrides."""
        merged = dict(self.thresholds)
        merged.update(self.sets.get(dataset, {}))
        return merged


@dataclass(frozen=True)
class Config:
    """Everything that decides what a run does. Build it with :func:`parse_config`.

    Every construction validates every option as the YAML loader does (``__post_init__``), so
    ``Config(samples=-5)``, ``dataclasses.replace(config, fail_on="sometimes")`` and
    :meth:`override` raise :class:`~innaudit.core.errors.ConfigError` with one line saying what
    was given and what was expected. Values are normalized on the way in: lists become tuples,
    ``fail_on`` a :class:`~innaudit.core.results.Status`, ``budget`` seconds, ``range`` a pair.
    """

    seed: int = 0
    samples: int = 10000
    batch_size: int | str = "auto"
    """Samples per batch, or ``"auto"`` (the largest batch whose activations fit free memory)."""
    device: str = "cpu"
    float64_check: bool = False
    default_ood: bool = True
    """Run the paper's noise battery when no ``ood`` set is given (false: no OOD sets)."""
    fail_on: Status = Status.FAIL
    """The least severe status that fails the gate: ``Status.FAIL`` or ``Status.WARN``."""
    data: str | None = None
    ood: tuple[str, ...] = ()
    audits: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    settings: Mapping[str, AuditSettings] = field(default_factory=dict)
    waivers: tuple[Waiver, ...] = ()
    allow_mutation: bool = False
    range: tuple[float, float] | None = None
    levels: int | None = None
    budget: float | None = None
    """Seconds the run may take (``--budget``); None: the sample defaults, however long."""
    threads: int | None = None
    """torch's intra-op threads (``--threads``); None: ``OMP_NUM_THREADS``, else measured
    (:mod:`innaudit.run.threads`)."""

    def __post_init__(self) -> None:
        for key in OPTIONS:
            object.__setattr__(self, key, _value(key, getattr(self, key)))
        _check_ranges(self)
        if self.settings:  # a parsed config knows every audit id
            _check_ids(self, self.settings)

    def override(self, specs: Mapping[str, AuditSpec] | None = None, /, **options: Any) -> Config:
        """This config with ``options`` laid over it, each validated as the YAML loader does.

        The one path from keyword options to a Config, taken by the YAML loader, the CLI flags
        and the Python API. ``specs`` (the registered audits) lets ``audits`` and ``skip`` be
        checked against the audit ids when this config was built by hand (no settings).

        Raises:
            ConfigError: an unknown option, or a value of the wrong type or out of range.
        """
        for key in options:
            if key not in OPTIONS:
                raise ConfigError(f"option {short_repr(key)} is unknown{did_you_mean(str(key), list(OPTIONS))}")
        config = replace(self, **options) if options else self
        if specs is not None:
            _check_ids(config, specs)
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report's ``run.config``."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("settings", "waivers")
        }
        out["fail_on"] = self.fail_on.value
        out["waivers"] = [w.to_dict() for w in self.waivers]
        out["ood"], out["audits"], out["skip"] = list(self.ood), list(self.audits), list(self.skip)
        out["range"] = None if self.range is None else list(self.range)
        out["settings"] = {
            aid: {
                "thresholds": {k: t.to_dict() for k, t in s.thresholds.items()},
                "sets": {n: {k: t.to_dict() for k, t in th.items()} for n, th in s.sets.items()},
                "options": dict(s.options),
            }
            for aid, s in self.settings.items()
        }
        return out


MAX_COUNT = 10**9
"""Largest ``samples`` or ``batch_size`` accepted (a count, not a memory budget)."""

_SCALARS: dict[str, type] = {
    "seed": int,
    "samples": int,
    "device": str,
    "default_ood": bool,
    "allow_mutation": bool,
    "float64_check": bool,
    "fail_on": str,
}
_LISTS = ("ood", "audits", "skip")
OPTIONS = (*_SCALARS, *_LISTS, "data", "range", "levels", "batch_size", "budget", "threads")
"""The top-level keys of a config that take one value (not the audit sections or waivers)."""


def _typed(where: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if (
        (kind is bool and not isinstance(value, bool))
        or (kind is not bool and isinstance(value, bool))
        or not isinstance(value, kind)
    ):
        raise ConfigError(f"{where} is {short_repr(value)} ({type(value).__name__}); expected {kind.__name__}")
    if kind is float and math.isnan(cast(float, value)):
        raise ConfigError(f"{where} is NaN; expected a number")
    return value


def _threshold(where: str, raw: Any, base: Threshold | None, direction: Direction) -> Threshold:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} is {short_repr(raw)}; expected a mapping like {{warn: 1e-4, fail: 1e-2}}")
    for key in raw:
        if key not in ("warn", "fail"):
            raise ConfigError(f"{where}.{key} is not a threshold level{did_you_mean(str(key), ['warn', 'fail'])}")
    values = {k: None if raw[k] is None else _typed(f"{where}.{k}", raw[k], float) for k in raw}
    merged = replace(base or Threshold(), **values)
    if merged.warn is not None and merged.fail is not None:
        if direction is Direction.HIGHER_BETTER and merged.warn < merged.fail:
            raise ConfigError(
                f"{where}: warn {merged.warn} is below fail {merged.fail}; this metric is "
                "better when higher, so expected warn >= fail"
            )
        if direction is not Direction.HIGHER_BETTER and merged.warn > merged.fail:
            raise ConfigError(f"{where}: warn {merged.warn} is above fail {merged.fail}; expected warn <= fail")
    return merged


def _thresholds(where: str, raw: Any, spec: AuditSpec, base: Mapping[str, Threshold]) -> dict[str, Threshold]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} is {short_repr(raw)}; expected a mapping of metric names to thresholds")
    merged = dict(base)
    for metric, value in raw.items():
        if not any(covers(m.path, str(metric)) for m in spec.metrics):
            known = [p for m in spec.metrics for p in (m.path, *(f"{m.path}.{s}" for s in STATS))]
            raise ConfigError(f"{where}.{metric} is not a metric of {spec.id}{did_you_mean(str(metric), known)}")
        direction = direction_of({m.path: m for m in spec.metrics}, str(metric))
        merged[metric] = _threshold(f"{where}.{metric}", value, base.get(metric), direction)
    return merged


def _audit_settings(spec: AuditSpec, raw: Any) -> AuditSettings:
    where = spec.id
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} is {short_repr(raw)}; expected a mapping with thresholds, sets or options")
    known = ["thresholds", "sets", *spec.options]
    options = dict(spec.options)
    thresholds: dict[str, Threshold] = dict(spec.thresholds)
    sets: dict[str, dict[str, Threshold]] = {}
    for key, value in raw.items():
        if key == "thresholds":
            thresholds = _thresholds(f"{where}.thresholds", value, spec, spec.thresholds)
        elif key == "sets":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.sets is {short_repr(value)}; expected a mapping of set names")
            for name, body in value.items():
                if not isinstance(body, Mapping) or set(body) - {"thresholds"}:
                    raise ConfigError(f"{where}.sets.{name} must be a mapping with one key, thresholds")
                sets[str(name)] = _thresholds(f"{where}.sets.{name}.thresholds", body.get("thresholds", {}), spec, {})
        elif key in spec.options:
            options[key] = _option(f"{where}.{key}", value, spec.options[key])
        else:
            raise ConfigError(f"{where}.{key} is not a setting of {spec.id}{did_you_mean(str(key), known)}")
    if spec.check is not None:
        spec.check(options)
    # a set override inherits the other level from the audit-wide threshold
    for name, overrides in sets.items():
        sets[name] = {m: _merge_level(thresholds.get(m), t) for m, t in overrides.items()}
    return AuditSettings(thresholds, options, sets)


def _merge_level(base: Threshold | None, override: Threshold) -> Threshold:
    return (
        override
        if base is None
        else Threshold(
            warn=override.warn if override.warn is not None else base.warn,
            fail=override.fail if override.fail is not None else base.fail,
        )
    )


def _option(where: str, value: Any, default: Any) -> Any:
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{where} is {short_repr(value)}; expected a non-empty list")
        kind = type(default[0]) if default else float
        return tuple(_typed(f"{where}[{i}]", v, kind) for i, v in enumerate(value))
    if default is None:  # a nullable number: null (derive it) or a float
        return None if value is None else _typed(where, value, float)
    return _typed(where, value, type(default))


def parse_config(
    raw: Mapping[str, Any] | None,
    specs: Mapping[str, AuditSpec],
    overrides: Mapping[str, Any] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Validate a YAML mapping (and CLI overrides on top) into a :class:`Config`.

    Args:
        raw: the YAML document (None for no file).
        specs: the registered audits, by id.
        overrides: command-line values, already typed, by top-level key; None values are ignored.
        sections: command-line values for audit sections (``{"sampling": {"temperatures": ...}}``),
            merged over the YAML's.
    """
    raw = dict(raw or {})
    for aid, section in (sections or {}).items():
        base = raw.get(aid)
        raw[aid] = {**(base if isinstance(base, Mapping) else {}), **section}
    known = [*OPTIONS, "waivers", *specs]
    for key in raw:
        if not isinstance(key, str) or key not in known:
            raise ConfigError(f"config key {short_repr(key)} is unknown{did_you_mean(str(key), known)}")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    options = Config().override(specs, **{**{k: v for k, v in raw.items() if k in OPTIONS}, **given})  # flags win
    settings = {aid: _audit_settings(spec, raw.get(aid)) for aid, spec in specs.items()}
    return replace(options, settings=settings, waivers=parse_waivers(raw.get("waivers"), list(specs)))


def configured(
    config: Config | Mapping[str, Any] | None, specs: Mapping[str, AuditSpec], options: Mapping[str, Any]
) -> Config:
    """The Config of an API call: ``config`` (a Config, a mapping in the YAML layout, or None)
    with the keyword ``options`` that were given (not None) laid over it by
    :meth:`Config.override`."""
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(config, Config):
        return config.override(specs, **given)
    return parse_config(config, specs, given)


def _value(key: str, value: Any) -> Any:
    """One top-level option, validated and normalized as the YAML loader reads it."""
    if key in _SCALARS:
        typed = _typed(key, value, _SCALARS[key])
        return _fail_on(typed) if key == "fail_on" else typed
    if key in _LISTS:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} is {short_repr(value)}; expected a list of strings")
        return tuple(value)
    if value is None and key in ("data", "range", "levels", "budget", "threads"):
        return None
    if key == "data":
        return _typed(key, value, str)
    if key == "range":
        return _range(value)
    if key == "levels":
        return _typed(key, value, int)
    if key == "batch_size":
        return value if value == "auto" else _typed(key, value, int)
    if key == "threads":
        return check_threads(value)
    from innaudit.config.duration import parse_duration

    return parse_duration(value)


def _fail_on(value: str) -> Status:
    if value not in FAIL_ON:
        raise ConfigError(f"fail_on is {short_repr(value)}; expected {' or '.join(map(repr, FAIL_ON))}")
    return Status(value)


MAX_THREADS = 4096
"""Largest ``threads`` accepted."""


def check_threads(value: Any) -> int:
    """``threads`` (``--threads``): a whole number from 1 to :data:`MAX_THREADS`, else a
    ConfigError (the cores are not checked: the count is the user's call)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THREADS:
        raise ConfigError(f"threads is {short_repr(value)}; expected a whole number of threads from 1 to {MAX_THREADS}")
    return value


def _range(value: Any) -> tuple[float, float]:
    """``[LOW, HIGH]`` or ``"LOW,HIGH"`` -> ``(low, high)`` with ``low < high``."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"range is {value!r}; expected two numbers LOW,HIGH such as 0,1") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"range {low:g},{high:g} is not a range; expected finite LOW < HIGH")
    return low, high


def _check_ranges(config: Config) -> None:
    if config.levels is not None and config.levels < 2:
        raise ConfigError(f"levels is {config.levels}; expected at least 2 quantization levels")
    for key in ("samples", "batch_size"):
        value = getattr(config, key)
        if isinstance(value, int) and not 1 <= value <= MAX_COUNT:
            raise ConfigError(f"{key} is {short_repr(value)}; expected a count from 1 to {MAX_COUNT:.0e}")


def _check_ids(config: Config, known: Mapping[str, Any]) -> None:
    """Every id in ``audits`` and ``skip`` names a registered audit (``known``, by id)."""
    for key in ("audits", "skip"):
        for aid in getattr(config, key):
            if aid not in known:
                raise ConfigError(f"{key}: audit {aid!r} does not exist{did_you_mean(aid, list(known))}")


def load_config(
    path: str | Path | None,
    specs: Mapping[str, AuditSpec],
    overrides: Mapping[str, Any] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Read ``path`` with ``yaml.safe_load`` (None: no file) and :func:`parse_config` it."""
    from innaudit.config.yaml import read_yaml

    raw: Any = None
    if path is not None:
        file = Path(path)
        raw = read_yaml(file)
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"config file {file} holds a {type(raw).__name__}; expected a mapping of keys")
    return parse_config(raw, specs, overrides, sections)
