"""`{id, type: "wait", duration | until: {time, weekdays?} | untilAttribute: {key, offset?}, next}`.

Exactly one of:
- `duration`: the run goes on that long after it arrived here.
- `until: {time: "HH:MM", weekdays?: ["mon", ...]}`: the first such local time, on one of the
  weekdays when given, at or after the arrival, in the user's time zone (their profile's
  `timezone`, else the fallback zone the worker passes, else UTC). DST as in quiet hours: a
  local time that does not exist that day (spring forward) moves forward by the gap (02:30
  becomes 03:30), an ambiguous one (fall back) is its first occurrence.
- `untilAttribute: {key, offset?}`: the moment an attribute holds (an ISO date or datetime,
  as `journeys.timestamps` reads them; a bare date is midnight in the user's zone; `createdAt`
  and `lastSeenAt` are the profile's, `entry.<property>` the entry event's), shifted by
  `offset` (`"-1d"`, `"2h"`, `"+30m"` or signed seconds). A target already past goes on at
  once; an attribute that holds no date ends the run with that reason.

The target is worked out again on every advance from the arrival time and the current facts,
so a user who changes zone or date is woken at the new time (a new Wake), and the same facts
always give the same wake time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, ClassVar, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from journeys.durations import parse_duration
from journeys.filters import ATTRIBUTE_NAME
from journeys.quiet_hours import parse_hhmm
from journeys.steps.base import (
    MAX_SECONDS,
    MISSING,
    End,
    Go,
    Outcome,
    Park,
    Problems,
    Step,
    StepInput,
)
from journeys.timestamps import parse_timestamp

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MODES = ("duration", "until", "untilAttribute")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_OFFSET = re.compile(r"([+-]?)([0-9]{1,9}[smhdw])")
NO_DATE = 'step "{step}": untilAttribute "{key}" holds no date'


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def user_zone(user_timezone: str | None, fallback: str | None) -> ZoneInfo:
    """The user's zone when it is a known IANA name, else the fallback's, else UTC."""
    for name in (user_timezone, fallback):
        if isinstance(name, str) and name:
            zone = _zone(name)
            if zone is not None:
                return zone
    return ZoneInfo("UTC")


def local_instant(day: Any, clock: time, zone: ZoneInfo) -> datetime:
    """The UTC moment of a local wall-clock time (gap: moved forward; overlap: the first)."""
    # fold=0 takes the offset before a transition, which gives both rules.
    return datetime.combine(day, clock).replace(tzinfo=zone, fold=0).astimezone(UTC)


def next_local_time(
    start: datetime, clock: time, weekdays: tuple[str, ...] | None, zone: ZoneInfo
) -> datetime:
    """The first `clock` in `zone` at or after `start`, on one of `weekdays` when given."""
    allowed = {WEEKDAYS.index(day) for day in weekdays} if weekdays else None
    first_day = start.astimezone(zone).date()
    for offset in range(8):
        day = first_day + timedelta(days=offset)
        if allowed is not None and day.weekday() not in allowed:
            continue
        candidate = local_instant(day, clock, zone)
        if candidate >= start:
            return candidate
    raise AssertionError("a week always holds an allowed day")  # pragma: no cover


def signed_offset(text: str) -> timedelta:
    """`"-1d"`, `"+2h"`, `"30m"` to a timedelta (ValueError otherwise)."""
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an offset like '-1d', '2h' or '+30m'")
    length = parse_duration(match[2])
    return -length if match[1] == "-" else length


def _moment(value: Any, zone: ZoneInfo) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not isinstance(value, str) or len(value) > 40:
        return None
    moment = parse_timestamp(value)
    if moment is not None and _DATE.fullmatch(value):
        return local_instant(moment.date(), time(0), zone)
    return moment


@dataclass(frozen=True, kw_only=True)
class Wait(Step):
    """Hold the run for a duration, until a local time, or until a date in an attribute."""

    duration: str | None = None
    clock: str | None = None
    weekdays: tuple[str, ...] | None = None
    attribute: str | None = None
    offset: str | None = None
    next: str
    type_name: ClassVar[str] = "wait"
    is_wait: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = (*MODES, "next")

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        modes = [mode for mode in MODES if raw.get(mode) is not None]
        values: dict[str, Any] = {}
        if len(modes) != 1:
            problems.add("", "exactly one of duration, until and untilAttribute")
        elif modes[0] == "duration":
            values["duration"] = problems.duration(raw["duration"], "duration")
        elif modes[0] == "until":
            values.update(_until(raw["until"], problems))
        else:
            values.update(_until_attribute(raw["untilAttribute"], problems))
        return cls(
            id=problems.step_id, next=problems.edge(problems.take(raw, "next"), "next"), **values
        )

    def edge_fields(self) -> list[tuple[str, str]]:
        return [("next", self.next)]

    def config_json(self) -> dict[str, Any]:
        node: dict[str, Any]
        if self.duration is not None:
            node = {"duration": self.duration}
        elif self.clock is not None:
            until: dict[str, Any] = {"time": self.clock}
            if self.weekdays is not None:
                until["weekdays"] = list(self.weekdays)
            node = {"until": until}
        else:
            attribute: dict[str, Any] = {"key": self.attribute}
            if self.offset is not None:
                attribute["offset"] = self.offset
            node = {"untilAttribute": attribute}
        node["next"] = self.next
        return node

    def target(self, run: StepInput) -> datetime | None:
        """When the wait ends for this run (None: the attribute holds no date)."""
        if self.duration is not None:
            return run.since + parse_duration(self.duration)
        zone = user_zone(run.user.timezone, run.timezone)
        if self.clock is not None:
            return next_local_time(run.since, parse_hhmm(self.clock), self.weekdays, zone)
        assert self.attribute is not None
        if self.attribute == "createdAt":
            value: Any = run.user.created_at
        elif self.attribute == "lastSeenAt":
            value = run.user.last_seen_at
        else:
            value = run.profile().attributes.get(self.attribute)
        moment = _moment(value, zone)
        if moment is None:
            return None
        try:
            return moment + (signed_offset(self.offset) if self.offset else timedelta(0))
        except OverflowError:
            return None

    def advance(self, run: StepInput) -> Outcome:
        target = self.target(run)
        if target is None:
            return End(NO_DATE.format(step=run.step, key=self.attribute))
        if run.now >= target:
            return Go(self.next)
        return Park(target)


def _until(raw: Any, problems: Problems) -> dict[str, Any]:
    until = problems.mapping(raw, "until", "until")
    if until is None:
        return {}
    problems.known(until, ("time", "weekdays"), "until")
    values: dict[str, Any] = {}
    clock = problems.take(until, "time", "until")
    if clock is not MISSING:
        try:
            parse_hhmm(clock if isinstance(clock, str) else "")
            values["clock"] = clock
        except ValueError:
            problems.add("until.time", 'time must be "HH:MM" (00:00-23:59)')
    days = until.get("weekdays")
    if days is not None:
        if (
            not isinstance(days, list)
            or not days
            or any(day not in WEEKDAYS for day in days)
            or len(set(days)) != len(days)
        ):
            problems.add(
                "until.weekdays", f"weekdays must be a non-empty list of {', '.join(WEEKDAYS)}"
            )
        else:
            values["weekdays"] = tuple(day for day in WEEKDAYS if day in days)
    return values


def _until_attribute(raw: Any, problems: Problems) -> dict[str, Any]:
    spec = problems.mapping(raw, "untilAttribute", "untilAttribute")
    if spec is None:
        return {}
    problems.known(spec, ("key", "offset"), "untilAttribute")
    values: dict[str, Any] = {}
    key = problems.take(spec, "key", "untilAttribute")
    if key is not MISSING:
        if isinstance(key, str) and ATTRIBUTE_NAME.fullmatch(key):
            values["attribute"] = key
        else:
            problems.add("untilAttribute.key", "key must be an attribute name")
    offset = spec.get("offset")
    if offset is not None:
        try:
            if isinstance(offset, str):
                signed_offset(offset)
                values["offset"] = offset
            elif (
                isinstance(offset, int | float)
                and not isinstance(offset, bool)
                and float(offset).is_integer()
                and 1 <= abs(offset) <= MAX_SECONDS
            ):
                values["offset"] = f"{int(offset)}s"
            else:
                raise ValueError("an offset like '-1d', '2h', '+30m', or signed seconds")
        except ValueError as error:
            problems.add("untilAttribute.offset", f"offset: {error}")
    return values
