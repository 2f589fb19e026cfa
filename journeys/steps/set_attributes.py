"""`{id, type: "setAttributes", attributes, next}`: merge attributes into the profile.

A null value deletes the key, as in `POST /v1/users`. Later steps of the same advance see the
new values (the machine applies the effect to its copy of the user's facts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from journeys.rules.definition import MAX_NAME, MAX_SET_ATTRIBUTES, name_problem
from journeys.steps.base import MISSING, Go, Outcome, Problems, Step, StepInput
from journeys.steps.effects import SetAttributes as SetAttributesEffect


@dataclass(frozen=True, kw_only=True)
class SetAttributes(Step):
    """Set (or with null, delete) attributes of the run's user."""

    attributes: Mapping[str, Any]
    next: str
    type_name: ClassVar[str] = "setAttributes"
    fields: ClassVar[tuple[str, ...]] = ("attributes", "next")

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        value = problems.take(raw, "attributes")
        attributes: dict[str, Any] = {}
        if value is not MISSING:
            if not isinstance(value, Mapping) or not value:
                problems.add("attributes", "attributes must be a non-empty object")
            elif len(value) > MAX_SET_ATTRIBUTES:
                problems.add("attributes", f"at most {MAX_SET_ATTRIBUTES} attributes")
            elif any(name_problem(key) for key in value):
                problems.add("attributes", f"attribute names are 1-{MAX_NAME} characters")
            else:
                attributes = dict(value)
        return cls(
            id=problems.step_id,
            attributes=attributes,
            next=problems.edge(problems.take(raw, "next"), "next"),
        )

    def edge_fields(self) -> list[tuple[str, str]]:
        return [("next", self.next)]

    def config_json(self) -> dict[str, Any]:
        return {"attributes": dict(self.attributes), "next": self.next}

    def advance(self, run: StepInput) -> Outcome:
        effect = SetAttributesEffect(dict(self.attributes), run.step, run.visit)
        return Go(self.next, (effect,))
