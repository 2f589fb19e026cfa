"""`{id, type: "waitForEvent", event, where?, matchOn?, timeout, next, onTimeout}`.

The run waits for the user's event (its properties satisfying `where`). With `matchOn:
"cartId"` only an event whose `cartId` equals (typed, as filters compare) the entry event's
`cartId` counts, so two carts of one user each wait for their own purchase. An event counts
when Cairn received it after the wait began and no later than `timeout` after: then the run
goes to `next`, even if the worker looks at it late. Once the timeout has passed without one,
it goes to `onTimeout` (the absence trigger: "no purchase within 24 h").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from journeys.durations import parse_duration
from journeys.filters import Condition, typed_equal
from journeys.steps.base import (
    MISSING,
    Go,
    IncomingEvent,
    Outcome,
    Park,
    Problems,
    Step,
    StepInput,
    condition_json,
    event_matches,
)


def properties_pair(name: str, entry_value: Any, event: IncomingEvent) -> bool:
    """Whether the event's property `name` equals the entry event's (missing pairs nothing)."""
    actual = event.properties.get(name)
    if entry_value is MISSING or actual is None:
        return False
    if not isinstance(entry_value, str | int | float | bool):
        return False
    return typed_equal(actual, entry_value)


@dataclass(frozen=True, kw_only=True)
class WaitForEvent(Step):
    """Wait for an event, or time out."""

    event: str
    where: Condition | None = None
    match_on: str | None = None
    timeout: str
    next: str
    on_timeout: str
    type_name: ClassVar[str] = "waitForEvent"
    is_wait: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = (
        "event",
        "where",
        "matchOn",
        "timeout",
        "next",
        "onTimeout",
    )

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        event = problems.name(problems.take(raw, "event"), "event")
        match_on = problems.take(raw, "matchOn", required=False)
        return cls(
            id=problems.step_id,
            event=event,
            where=problems.where(problems.take(raw, "where", required=False), event, "where"),
            match_on=problems.property_name(match_on, "matchOn") or None,
            timeout=problems.duration(problems.take(raw, "timeout"), "timeout"),
            next=problems.edge(problems.take(raw, "next"), "next"),
            on_timeout=problems.edge(problems.take(raw, "onTimeout"), "onTimeout"),
        )

    def edge_fields(self) -> list[tuple[str, str]]:
        return [("next", self.next), ("onTimeout", self.on_timeout)]

    def config_json(self) -> dict[str, Any]:
        node: dict[str, Any] = {"event": self.event}
        if self.where is not None:
            node["where"] = condition_json(self.where)
        if self.match_on is not None:
            node["matchOn"] = self.match_on
        node.update(timeout=self.timeout, next=self.next, onTimeout=self.on_timeout)
        return node

    def matches(self, run: StepInput, event: IncomingEvent) -> bool:
        """Whether this event ends the wait (name, time window, where, matchOn)."""
        if event.name != self.event:
            return False
        deadline = run.since + parse_duration(self.timeout)
        if not run.since < event.at <= deadline:
            return False
        if self.match_on is not None and not properties_pair(
            self.match_on, run.entry_property(self.match_on), event
        ):
            return False
        return event_matches(self.where, event)

    def advance(self, run: StepInput) -> Outcome:
        if run.event is not None and self.matches(run, run.event):
            return Go(self.next)
        deadline = run.since + parse_duration(self.timeout)
        if run.now >= deadline:
            return Go(self.on_timeout)
        return Park(deadline)
