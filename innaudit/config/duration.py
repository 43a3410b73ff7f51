"""Durations as users write them (``--budget 90s``, ``budget: 10m``), parsed to seconds."""

from __future__ import annotations

import math
import re

from innaudit.core.errors import ConfigError

__all__ = ["parse_duration"]


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """``"90s"``, ``"10m"``, ``"1h"``, ``"1h30m"`` or a number of seconds -> seconds (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text).lower())
        if match is None or not any(match.groups()):
            raise ConfigError(f"budget {text!r} is not a duration; expected e.g. 90s, 10m, 1h or 1h30m")
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = 3600 * h + 60 * m + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"budget {text!r} is not a positive duration; expected e.g. 90s, 10m or 1h")
    return seconds
