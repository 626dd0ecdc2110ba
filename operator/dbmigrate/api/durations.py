"""Go-style durations (`500ms`, `30s`, `5m`, `1h30m`) as used throughout the API: parsing and
formatting, without pydantic (the backfill worker and the linter use them; the models' field
type is `api.schema.Duration`)."""

from __future__ import annotations

import re

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration string; raises ValueError on anything else."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 30s, 5m, 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """A short human duration: `850ms`, `12s`, `4m10s`, `1h2m`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def check_within(value: str, bounds: tuple[str, str], what: str) -> None:
    """ValueError unless the duration `value` is within `bounds` (inclusive)."""
    low, high = bounds
    if not parse_duration(low) <= parse_duration(value) <= parse_duration(high):
        raise ValueError(f"{what} must be between {low} and {high}, not {value}")
