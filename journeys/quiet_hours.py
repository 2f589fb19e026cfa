"""Quiet hours: is a moment inside a daily local-time window, and when does the window end.

Pure: standard library only. DST rule: the window is computed on local wall-clock times;
an end time that does not exist that day (spring forward) is pushed forward by the gap
(02:30 becomes 03:30 daylight time), and an ambiguous one (fall back) is its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


def parse_hhmm(text: str) -> time:
    """`"22:00"` to a time; raises ValueError for anything else."""
    hours, _, minutes = text.partition(":")
    if len(hours) != 2 or len(minutes) != 2 or not (hours + minutes).isdigit():
        raise ValueError(f"expected HH:MM, got {text!r}")
    return time(int(hours), int(minutes))


def quiet_until(now: datetime, start: time, end: time, zone: str) -> datetime | None:
    """If `now` falls in the window [start, end) in `zone`, the UTC moment it ends; else None."""
    if start == end:
        return None
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        end_day = local.date()
    else:  # spans midnight, e.g. 22:00-08:00
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    # fold=0: the offset before a transition, which gives both rules in the docstring.
    return datetime.combine(end_day, end).replace(tzinfo=tz, fold=0).astimezone(UTC)
