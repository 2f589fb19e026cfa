"""The ISO 8601 subset that filters accept as a date or timestamp, parsed to aware UTC.

Accepted, and nothing else (no week dates, no `HH:MM` without seconds, no julian days):

    YYYY-MM-DD                                   midnight UTC
    YYYY-MM-DD(T| )HH:MM:SS[.f{1,9}][Z|±HH:MM]   no offset means UTC

Fractions beyond microseconds are truncated. The calendar is checked (no February 30, hours
up to 23, no leap seconds) and the instant, once shifted to UTC, must lie within years
0001-9999. `app.segment_sql` implements the same rules in SQL; keep them in step.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# [0-9] and fullmatch, never \d and $: those accept non-ASCII digits and a trailing newline.
TIMESTAMP_PATTERN = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
MIN_TIMESTAMP = datetime(1, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def epoch_microseconds(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC of an aware (or naive, taken as UTC) datetime."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _MICROSECOND


MIN_EPOCH_US = epoch_microseconds(MIN_TIMESTAMP)
MAX_EPOCH_US = epoch_microseconds(MAX_TIMESTAMP)


def days_in_month(year: int, month: int) -> int:
    """Days in a month of the proleptic Gregorian calendar."""
    if month == 2:
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_timestamp(text: str) -> datetime | None:
    """Parse the accepted ISO 8601 subset to an aware UTC datetime, or None when invalid."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    hour, minute, second = (int(match[i]) if match[i] else 0 for i in (4, 5, 6))
    micro = int((match[7] or "").ljust(6, "0")[:6])
    offset_minutes = 0
    if match[8] and match[8] != "Z":
        off_hours, off_minutes = int(match[8][1:3]), int(match[8][4:6])
        if off_hours > 23 or off_minutes > 59:
            return None
        offset_minutes = (off_hours * 60 + off_minutes) * (-1 if match[8][0] == "-" else 1)
    if not (year >= 1 and 1 <= month <= 12 and 1 <= day <= days_in_month(year, month)):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    local = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    # Shift in integer microseconds: datetime arithmetic would overflow at the year edges.
    micros = epoch_microseconds(local) - offset_minutes * 60_000_000
    if not MIN_EPOCH_US <= micros <= MAX_EPOCH_US:
        return None
    return EPOCH + micros * _MICROSECOND
