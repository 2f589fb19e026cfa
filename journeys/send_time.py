"""When a scheduled campaign's message goes out: its `sendAt`, or that wall-clock time per zone.

Pure: standard library only. DST rule (the same as `journeys.quiet_hours`): a local time that
does not exist that day (spring forward) is pushed forward by the gap (02:30 becomes 03:30
daylight time), and an ambiguous one (fall back) is its first occurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def parse_instant(raw: Any) -> datetime | None:
    """An ISO 8601 instant (`Z` allowed) as aware UTC; a naive one is UTC; None if not one."""
    if isinstance(raw, datetime):
        moment = raw
    elif isinstance(raw, str) and raw:
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def wall_clock(raw: Any) -> datetime | None:
    """The local date and time an ISO `sendAt` names (its offset, if any, ignored), naive."""
    if isinstance(raw, datetime):
        return raw.replace(tzinfo=None)
    if isinstance(raw, str) and raw:
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).replace(tzinfo=None)
        except ValueError:
            return None
    return None


def zone_or(zone: str | None, fallback: str) -> str:
    """`zone` when it is a known IANA zone, else `fallback`."""
    if zone:
        try:
            ZoneInfo(zone)
            return zone
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return fallback


def local_instant(wall: datetime, zone: str) -> datetime:
    """The UTC instant at which clocks in `zone` show `wall` (naive), by the DST rule above."""
    # fold=0: the offset before a transition, which gives both rules in the module docstring.
    return wall.replace(tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)


def fallback_zone(schedule: Mapping[str, Any] | None, project_settings: Mapping[str, Any]) -> str:
    """The zone for users without one: the schedule's `timezone`, else the project's, else UTC."""
    zone = (schedule or {}).get("timezone") or project_settings.get("timezone")
    if not zone:
        zone = (project_settings.get("quietHours") or {}).get("timezone")
    return zone_or(zone, "UTC")


def hour_of(moment: datetime) -> datetime:
    """The UTC hour a moment falls in (what a per-hour schedule groups by)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
