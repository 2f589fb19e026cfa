"""Durations written as a count and a unit: `30s`, `15m`, `2h`, `7d`, `4w`."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# A hundred years: long enough for any campaign window, short enough that `now - d` never
# leaves the range of `datetime`.
MAX_DURATION = timedelta(days=36_500)


def parse_duration(text: str) -> timedelta:
    """Parse `<digits><s|m|h|d|w>` into a positive timedelta; raise ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like '30s', '15m', '2h', '7d' or '4w'")
    duration = timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    if duration <= timedelta(0):
        raise ValueError("a duration must be longer than zero")
    if duration > MAX_DURATION:
        raise ValueError(f"a duration must be at most {MAX_DURATION.days} days")
    return duration
