"""`{id, type: "branch", branches: [{if, next}], default}`: the first matching branch wins.

`if` is a filter in the segment language, evaluated on the run's user with the run's context
names over the attributes: `entry.<property>` (the entry event's properties or the API params)
and, after a webhook step with `saveAs: "score"`, `score.ok`, `score.status` and
`score.body.<key>` (nested keys joined with dots). So `{"attr": "score.body.tier", "op": "eq",
"value": "gold"}` branches on a webhook's answer.

Extension for message outcomes: an `if` that is exactly `{"lastSend": status}` holds when the
run's most recent `send` step's message reached that status, one of `sent`, `delivered`,
`opened`, `clicked` (a ladder: a clicked message also counts as opened, delivered and sent) or
`failed`. Before any send, or while the message is queued, it holds for none; an expired,
suppressed or deduplicated message matches none either. (To test an attribute that is itself
called `lastSend`, use the JSON tree `{"attr": "lastSend", ...}`.) It cannot be nested in
`all`/`any`/`not`: chain branches instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from journeys.filters import Condition, evaluate
from journeys.steps.base import (
    MISSING,
    Go,
    Outcome,
    Problems,
    Step,
    StepInput,
    condition_json,
)

MAX_BRANCHES = 20
LAST_SEND = "lastSend"
# The statuses a message climbs through (app.models.message.REACHED), then the failure.
LADDER = ("sent", "delivered", "opened", "clicked")
LAST_SEND_STATUSES = (*LADDER, "failed")


def last_send_reached(wanted: str, status: str | None) -> bool:
    """Whether a message now at `status` reached `wanted` (see the module docstring)."""
    if status is None:
        return False
    if wanted == "failed" or status == "failed":
        return wanted == status
    return status in LADDER and LADDER.index(status) >= LADDER.index(wanted)


@dataclass(frozen=True)
class Case:
    """One branch: a filter or a lastSend test, and where it leads."""

    condition: Condition | None
    last_send: str | None
    next: str


@dataclass(frozen=True, kw_only=True)
class Branch(Step):
    """Route the run by the first branch whose condition holds, else `default`."""

    branches: tuple[Case, ...]
    default: str
    type_name: ClassVar[str] = "branch"
    fields: ClassVar[tuple[str, ...]] = ("branches", "default")

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        items = problems.take(raw, "branches")
        cases: list[Case] = []
        if items is not MISSING:
            if not isinstance(items, list) or not items:
                problems.add("branches", "branches must be a non-empty list")
            elif len(items) > MAX_BRANCHES:
                problems.add("branches", f"at most {MAX_BRANCHES} branches")
            else:
                cases = [_case(item, f"branches[{i}]", problems) for i, item in enumerate(items)]
        return cls(
            id=problems.step_id,
            branches=tuple(cases),
            default=problems.edge(problems.take(raw, "default"), "default"),
        )

    def edge_fields(self) -> list[tuple[str, str]]:
        edges = [(f"branches[{i}].next", case.next) for i, case in enumerate(self.branches)]
        return [*edges, ("default", self.default)]

    def conditions(self) -> list[Condition]:
        return [case.condition for case in self.branches if case.condition is not None]

    def config_json(self) -> dict[str, Any]:
        branches = [
            {
                "if": {LAST_SEND: case.last_send}
                if case.last_send is not None
                else condition_json(case.condition),
                "next": case.next,
            }
            for case in self.branches
        ]
        return {"branches": branches, "default": self.default}

    def advance(self, run: StepInput) -> Outcome:
        profile = None
        for case in self.branches:
            if case.last_send is not None:
                if last_send_reached(case.last_send, run.last_send_status):
                    return Go(case.next)
            elif case.condition is not None:
                profile = profile or run.profile()
                if evaluate(case.condition, profile):
                    return Go(case.next)
        return Go(self.default)


def _case(item: Any, sub: str, problems: Problems) -> Case:
    if not isinstance(item, Mapping):
        problems.add(sub, "a branch must be an object {if, next}")
        return Case(None, None, "")
    problems.known(item, ("if", "next"), sub)
    condition, last_send = None, None
    test = problems.take(item, "if", sub)
    if isinstance(test, Mapping) and LAST_SEND in test and len(test) == 1:
        last_send = problems.choice(test[LAST_SEND], f"{sub}.if.{LAST_SEND}", LAST_SEND_STATUSES)
    elif test is not MISSING:
        condition = problems.filter(test, f"{sub}.if")
    return Case(
        condition, last_send, problems.edge(problems.take(item, "next", sub), f"{sub}.next")
    )
