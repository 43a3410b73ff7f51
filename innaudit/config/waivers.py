"""Waivers: a documented, dated exception to a gate, written in the YAML config (parsing here;
applying them to a report is :func:`innaudit.verdict.gate.apply_waivers`, beside the gate).

::

    waivers:
      - audit: roundtrip       # an audit id
        set: rademacher        # a set name; leave it out to waive every set of the audit
        reason: "known: affine coupling explodes on binary noise; fix tracked in #12"
        expires: 2026-06-30    # YYYY-MM-DD; from that day on the waiver stops waiving

A waiver turns a FAIL or WARN of the matching set into PASS and records, on the set, the status
it waived and the reason (``SetResult.waiver``), so every report shows what was waived and why.
An ERROR is never waived: a crashed audit has no verdict to excuse. On or after ``expires`` the
waiver stops waiving, the set keeps its status, and the report says so in a warning; a waiver
that matched nothing also gives a warning (a stale waiver hides the next real failure).

Today's date comes from :data:`clock` (tests replace it) or the ``today`` argument.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from innaudit.core.errors import ConfigError, did_you_mean, short_repr

__all__ = ["Waiver", "clock", "parse_waivers"]

clock: Callable[[], dt.date] = dt.date.today
"""Where today's date comes from (replace it in tests)."""


@dataclass(frozen=True)
class Waiver:
    """One waiver: ``audit``, optional ``set`` (None: every set), ``reason``, ``expires``."""

    audit: str
    set: str | None
    reason: str
    expires: dt.date

    def matches(self, audit_id: str, dataset: str) -> bool:
        """True for the waived audit and set."""
        return audit_id == self.audit and self.set in (None, dataset)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report's ``run.config``."""
        return {"audit": self.audit, "set": self.set, "reason": self.reason, "expires": self.expires.isoformat()}

    @property
    def label(self) -> str:
        """``audit/set`` (``audit/*`` for every set)."""
        return f"{self.audit}/{self.set or '*'}"


def _date(where: str, value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{where} is {short_repr(value)}; expected a date YYYY-MM-DD")


def _one(where: str, raw: Any, audits: Sequence[str]) -> Waiver:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} is {short_repr(raw)}; expected a mapping with audit, set, reason, expires")
    unknown = sorted(set(map(str, raw)) - {"audit", "set", "reason", "expires"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]} is not a waiver key; expected audit, set, reason, expires")
    for key in ("audit", "reason", "expires"):
        if key not in raw:
            raise ConfigError(f"{where} has no {key}; a waiver needs audit, reason and expires (set is optional)")
    audit, dataset, reason = raw["audit"], raw.get("set"), raw["reason"]
    if not isinstance(audit, str) or audit not in audits:
        raise ConfigError(f"{where}.audit {short_repr(audit)} is not an audit{did_you_mean(audit, audits)}")
    if dataset is not None and not isinstance(dataset, str):
        raise ConfigError(f"{where}.set is {short_repr(dataset)}; expected a set name")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(f"{where}.reason is {short_repr(reason)}; expected a sentence saying why")
    return Waiver(audit, dataset, reason.strip(), _date(f"{where}.expires", raw["expires"]))


def parse_waivers(raw: Any, audits: Sequence[str]) -> tuple[Waiver, ...]:
    """Validate the YAML ``waivers`` list (None: no waivers) against the known audit ids."""
    if raw is None:
        return ()
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"waivers is {short_repr(raw)}; expected a list of {{audit, set, reason, expires}}")
    return tuple(_one(f"waivers[{i}]", item, audits) for i, item in enumerate(raw))
