"""Who may enter a journey: the run key of an entry, and the entry policy's decision.

Pure. A run is keyed by (user, journey, key value): with `entry.key` (e.g. `orderId`) a user may
have several runs side by side, one per key value; without one the key is `""`, so at most one
run per user and journey is active. The caller loads a summary of the previous runs with the
same (user, journey, key) and asks `may_enter`; the database's unique index on active runs of
(journey, user, key) backs the decision against races.

Policies (per key value when the journey has a key):
- `once`: never again after a first run, active or ended.
- `always`: whenever no run is active.
- `oncePer`: when no run is active and the last one entered at least `period` ago.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from journeys.durations import parse_duration
from journeys.journey.definition import EntryPolicy, JourneySpec
from journeys.steps.base import IncomingEvent, event_matches

ENTERED = "entered"
NO_KEY = 'the entry has no "{key}" (the journey\'s entry key)'
ALREADY_ACTIVE = "already in this journey"
ALREADY_ACTIVE_KEY = 'already in this journey for {key} "{value}"'
ENTERED_ONCE = "entered before (entry policy once)"
ENTERED_RECENTLY = "entered within the last {period} (entry policy oncePer)"


@dataclass(frozen=True)
class PreviousRuns:
    """The user's earlier runs of this journey with the same key value."""

    active: int = 0  # not ended yet (active or waiting)
    entered: int = 0  # ever, ended ones included
    last_entered_at: datetime | None = None


def key_text(value: Any) -> str | None:
    """A property value as a run key: text kept, numbers by value (`10.0` is `"10"`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def entry_key(entry: EntryPolicy, properties: Mapping[str, Any] | None) -> str | None:
    """The run key of an entry: `""` without an entry key, None when the entry lacks it."""
    if entry.key is None:
        return ""
    return key_text((properties or {}).get(entry.key))


def may_enter(
    entry: EntryPolicy, key: str | None, previous: PreviousRuns, now: datetime
) -> tuple[bool, str]:
    """Whether a user enters now, and why (or why not), under the journey's entry policy."""
    if key is None:
        return False, NO_KEY.format(key=entry.key)
    if previous.active:
        if entry.key is None:
            return False, ALREADY_ACTIVE
        return False, ALREADY_ACTIVE_KEY.format(key=entry.key, value=key)
    if entry.policy == "once" and previous.entered:
        return False, ENTERED_ONCE
    if entry.policy == "oncePer" and previous.last_entered_at is not None:
        assert entry.period is not None
        if now - previous.last_entered_at < parse_duration(entry.period):
            return False, ENTERED_RECENTLY.format(period=entry.period)
    return True, ENTERED


def trigger_matches(journey: JourneySpec, event: IncomingEvent) -> bool:
    """Whether an event enters users into an event-triggered journey (name and `where`)."""
    trigger = journey.trigger
    if trigger is None or trigger.kind != "event" or trigger.event != event.name:
        return False
    return event_matches(trigger.where, event)
