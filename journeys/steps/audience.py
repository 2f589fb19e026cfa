"""`{id, type: "audience", add? | remove?, ttlSeconds?, next}`: move the user, then go on.

Exactly one of `add` and `remove`, each an audience id or name (the app resolves names);
`ttlSeconds` (with `add` only) makes the membership expire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

from journeys.rules.definition import MAX_TTL_SECONDS
from journeys.steps.base import Go, Outcome, Problems, Step, StepInput, is_whole
from journeys.steps.effects import AudienceChange

ACTIONS = ("add", "remove")


@dataclass(frozen=True, kw_only=True)
class Audience(Step):
    """Add the user to an audience or remove them from one."""

    action: str
    audience: int | str
    ttl_seconds: int | None = None
    next: str
    type_name: ClassVar[str] = "audience"
    fields: ClassVar[tuple[str, ...]] = ("add", "remove", "ttlSeconds", "next")

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        given = [key for key in ACTIONS if raw.get(key) is not None]
        action = "add"
        audience: int | str = ""
        if len(given) != 1:
            problems.add("", "exactly one of add and remove")
        else:
            action = given[0]
            audience = problems.reference(raw[action], action, "the audience")
        ttl = raw.get("ttlSeconds")
        ttl_seconds = None
        if ttl is not None:
            if action != "add":
                problems.add("ttlSeconds", "ttlSeconds goes with add only")
            elif not is_whole(ttl) or not 1 <= ttl <= MAX_TTL_SECONDS:
                problems.add("ttlSeconds", f"ttlSeconds must be whole seconds, 1-{MAX_TTL_SECONDS}")
            else:
                ttl_seconds = int(ttl)
        return cls(
            id=problems.step_id,
            action=action,
            audience=audience,
            ttl_seconds=ttl_seconds,
            next=problems.edge(problems.take(raw, "next"), "next"),
        )

    def edge_fields(self) -> list[tuple[str, str]]:
        return [("next", self.next)]

    def references(self) -> list[tuple[str, str, int | str]]:
        return [(self.action, "audience", self.audience)]

    def with_reference(self, field_name: str, resolved: int) -> Self:
        return replace(self, audience=resolved)

    def config_json(self) -> dict[str, Any]:
        node: dict[str, Any] = {self.action: self.audience}
        if self.ttl_seconds is not None:
            node["ttlSeconds"] = self.ttl_seconds
        node["next"] = self.next
        return node

    def advance(self, run: StepInput) -> Outcome:
        effect = AudienceChange(self.action, self.audience, self.ttl_seconds, run.step, run.visit)
        return Go(self.next, (effect,))
