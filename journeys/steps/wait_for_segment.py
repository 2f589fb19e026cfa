"""`{id, type: "waitForSegment", filter, timeout, next, onTimeout}`: wait until the user matches.

The filter (any segment form, with the run's context names as in `branch`) is evaluated each
time the run is advanced: on arrival, when the user's data changes (the worker advances the
waiting runs of that user) and at the timeout. Matching goes to `next`, at once when the user
already matches; the timeout passing without a match goes to `onTimeout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from journeys.durations import parse_duration
from journeys.filters import AllOf, Condition, evaluate
from journeys.steps.base import Go, Outcome, Park, Problems, Step, StepInput, condition_json


@dataclass(frozen=True, kw_only=True)
class WaitForSegment(Step):
    """Wait for the user to match a filter, or time out."""

    filter: Condition
    timeout: str
    next: str
    on_timeout: str
    type_name: ClassVar[str] = "waitForSegment"
    is_wait: ClassVar[bool] = True
    fields: ClassVar[tuple[str, ...]] = ("filter", "timeout", "next", "onTimeout")

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        return cls(
            id=problems.step_id,
            filter=problems.filter(problems.take(raw, "filter"), "filter") or AllOf(()),
            timeout=problems.duration(problems.take(raw, "timeout"), "timeout"),
            next=problems.edge(problems.take(raw, "next"), "next"),
            on_timeout=problems.edge(problems.take(raw, "onTimeout"), "onTimeout"),
        )

    def edge_fields(self) -> list[tuple[str, str]]:
        return [("next", self.next), ("onTimeout", self.on_timeout)]

    def conditions(self) -> list[Condition]:
        return [self.filter]

    def config_json(self) -> dict[str, Any]:
        return {
            "filter": condition_json(self.filter),
            "timeout": self.timeout,
            "next": self.next,
            "onTimeout": self.on_timeout,
        }

    def advance(self, run: StepInput) -> Outcome:
        if evaluate(self.filter, run.profile()):
            return Go(self.next)
        deadline = run.since + parse_duration(self.timeout)
        if run.now >= deadline:
            return Go(self.on_timeout)
        return Park(deadline)
