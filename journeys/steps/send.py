"""`{id, type: "send", channel, template, next}`: send a template on a channel, then go on.

The run does not wait for the message: a later `branch` on `{"lastSend": ...}` reads how far
it got. The Send effect carries (step, visit), the key of the message's unique constraint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from journeys.filters import CHANNELS
from journeys.steps.base import Go, Outcome, Problems, Step, StepInput
from journeys.steps.effects import Send as SendEffect


@dataclass(frozen=True, kw_only=True)
class Send(Step):
    """Send `template` on `channel` (push, email, sms, inapp)."""

    channel: str
    template: int | str
    next: str
    type_name: ClassVar[str] = "send"
    fields: ClassVar[tuple[str, ...]] = ("channel", "template", "next")

    @classmethod
    def check(cls, raw: Mapping[str, Any], problems: Problems) -> Self:
        return cls(
            id=problems.step_id,
            channel=problems.choice(problems.take(raw, "channel"), "channel", CHANNELS),
            template=problems.reference(problems.take(raw, "template"), "template", "template"),
            next=problems.edge(problems.take(raw, "next"), "next"),
        )

    def edge_fields(self) -> list[tuple[str, str]]:
        return [("next", self.next)]

    def references(self) -> list[tuple[str, str, int | str]]:
        return [("template", "template", self.template)]

    def config_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "template": self.template, "next": self.next}

    def advance(self, run: StepInput) -> Outcome:
        effect = SendEffect(self.channel, self.template, run.step, run.visit)
        return Go(self.next, (effect,))
