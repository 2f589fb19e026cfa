"""Journey step types: one module per type, one line per type in STEP_TYPES.

Each type is a frozen dataclass (`base.Step`) whose instance is its validated config: `parse`
validates a step body and names the step in every error, `edge_fields`/`edges` say where it
may lead, `is_wait` whether it may hold a run over time, `advance` what a run does there.
Pure: standard library only, no I/O. The machine (`journeys.journey.machine`) looks types up
here and never switches on a type string. Type names are stored: never rename them.
"""

from journeys.steps.audience import Audience
from journeys.steps.base import (
    End,
    Go,
    IncomingEvent,
    Outcome,
    Park,
    Step,
    StepError,
    StepInput,
    WebhookResult,
)
from journeys.steps.branch import Branch
from journeys.steps.exit import Exit
from journeys.steps.send import Send
from journeys.steps.set_attributes import SetAttributes
from journeys.steps.split import Split
from journeys.steps.wait import Wait
from journeys.steps.wait_for_event import WaitForEvent
from journeys.steps.wait_for_segment import WaitForSegment
from journeys.steps.webhook import Webhook

STEP_TYPES: dict[str, type[Step]] = {
    "wait": Wait,
    "waitForEvent": WaitForEvent,
    "waitForSegment": WaitForSegment,
    "branch": Branch,
    "split": Split,
    "send": Send,
    "audience": Audience,
    "setAttributes": SetAttributes,
    "webhook": Webhook,
    "exit": Exit,
}

__all__ = [
    "STEP_TYPES",
    "Audience",
    "Branch",
    "End",
    "Exit",
    "Go",
    "IncomingEvent",
    "Outcome",
    "Park",
    "Send",
    "SetAttributes",
    "Split",
    "Step",
    "StepError",
    "StepInput",
    "Wait",
    "WaitForEvent",
    "WaitForSegment",
    "Webhook",
    "WebhookResult",
]
