"""Schemas of /v1/journeys (the Journey object of API.md), its runs, stats and API entries.

`trigger`, `entry`, `exit`, `goal` and `steps` are checked by `journeys.journey.definition`
(errors keyed by path, `steps[2].next`, each naming the step id); their JSON Schemas here
document the shapes that code accepts. What JSON Schema cannot say is documented instead:
every edge (`next`, `onTimeout`, `default`, a branch's or variant's `next`) names a step of the
list, every step is reachable from the first, every loop passes through a waiting step
(`wait`, `waitForEvent`, `waitForSegment`), a split's percents sum to 100, `entry.key` and
`matchOn` need an `event` or `api` trigger, `existingMembers: true` an `audienceEntered` or
`segmentEntered` one.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from app.models.journey import RUN_STATUSES, STATUSES
from app.schemas.common import PageArgsSchema, name_field, user_id_field, whole
from app.schemas.filters import DURATION, FIELD_NAME, FILTER, WHERE, ref
from app.schemas.rules import NAME, REFERENCE
from journeys.filters import CHANNELS
from journeys.journey.definition import MAX_EXITS, MAX_STEPS, POLICIES
from journeys.rules.definition import MAX_SET_ATTRIBUTES, MAX_TTL_SECONDS
from journeys.steps.base import MAX_SECONDS
from journeys.steps.branch import LAST_SEND, LAST_SEND_STATUSES, MAX_BRANCHES
from journeys.steps.split import MAX_VARIANTS, MIN_VARIANTS
from journeys.steps.wait import WEEKDAYS
from journeys.steps.webhook import MAX_URL

STEP_ID = {"type": "string", "pattern": whole("[A-Za-z0-9_-]{1,64}")}
PROPERTY = FIELD_NAME
NULL = {"type": "null"}
SPAN = {
    "anyOf": [DURATION, {"type": "integer", "minimum": 1, "maximum": MAX_SECONDS}],
    "description": '"90s", "15m", "2h", "3d", "1w" or whole seconds',
}
FILTER_DOC = {"allOf": [ref(FILTER)], "description": "any form of a segment filter"}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: null means absent."""
    return {"anyOf": [schema, NULL]}


def _step(kind: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return _obj(["id", "type", *required], id=STEP_ID, type={"const": kind}, **properties)


TRIGGER_DOC: dict[str, Any] = {
    "oneOf": [
        _obj(["event"], event=NAME, where=_null(WHERE)),
        _obj(["audienceEntered"], audienceEntered=REFERENCE),
        _obj(["segmentEntered"], segmentEntered=FILTER_DOC),
        _obj(["api"], api={"const": True}),
    ],
    "description": "how users enter: an event (with `where`), entering an audience, starting to "
    "match a filter, or only `POST /v1/journeys/{id}/enter`. Its kind never changes once the "
    "journey was activated.",
}
ENTRY_DOC: dict[str, Any] = {
    "anyOf": [
        _obj(
            [],
            policy={"enum": list(POLICIES)},
            period=_null(SPAN),
            key=_null(PROPERTY),
            existingMembers={"type": "boolean"},
        ),
        {"type": "null"},
    ],
    "description": "who may enter again: once (default) | always | oncePer `period`; `key` "
    "(an entry property, e.g. orderId) keys runs so a user may have one per value; "
    "`existingMembers` enters the trigger audience's or segment's members on first activation",
}
EXIT_DOC: dict[str, Any] = {
    "anyOf": [
        {
            "type": "array",
            "maxItems": MAX_EXITS,
            "items": {
                "oneOf": [
                    _obj(["event"], event=NAME, where=_null(WHERE), matchOn=_null(PROPERTY)),
                    _obj(["leftSegment"], leftSegment=FILTER_DOC),
                ]
            },
        },
        {"type": "null"},
    ],
    "description": "what ends a run early: an event (paired with the entry on `matchOn`) or "
    "leaving a segment",
}
GOAL_DOC: dict[str, Any] = {
    "anyOf": [_obj(["event"], event=NAME, where=_null(WHERE), within=_null(SPAN)), NULL],
    "description": "the event that ends a run as converted (within `within` of its entry)",
}
_UNTIL = _obj(
    ["time"],
    time={"type": "string", "pattern": whole("([01][0-9]|2[0-3]):[0-5][0-9]")},
    weekdays=_null(
        {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": WEEKDAYS}}
    ),
)
_OFFSET = {
    "anyOf": [
        {
            "type": "string",
            "format": "filter-duration",
            "pattern": whole("[+-]?(?=[0-9]*[1-9])[0-9]{1,9}[smhdw]"),
            "description": "a duration, optionally signed: -1d, +2h, 30m",
        },
        {"type": "integer", "minimum": -MAX_SECONDS, "maximum": MAX_SECONDS, "not": {"const": 0}},
    ]
}
STEP_DOC: dict[str, Any] = {
    "oneOf": [
        _step(
            "wait",
            ["duration", "next"],
            duration=SPAN,
            next=STEP_ID,
            until=NULL,
            untilAttribute=NULL,
        ),
        _step(
            "wait",
            ["until", "next"],
            until=_UNTIL,
            next=STEP_ID,
            duration=NULL,
            untilAttribute=NULL,
        ),
        _step(
            "wait",
            ["untilAttribute", "next"],
            untilAttribute=_obj(["key"], key=PROPERTY, offset=_null(_OFFSET)),
            next=STEP_ID,
            duration=NULL,
            until=NULL,
        ),
        _step(
            "waitForEvent",
            ["event", "timeout", "next", "onTimeout"],
            event=NAME,
            where=_null(WHERE),
            matchOn=_null(PROPERTY),
            timeout=SPAN,
            next=STEP_ID,
            onTimeout=STEP_ID,
        ),
        _step(
            "waitForSegment",
            ["filter", "timeout", "next", "onTimeout"],
            filter=FILTER_DOC,
            timeout=SPAN,
            next=STEP_ID,
            onTimeout=STEP_ID,
        ),
        _step(
            "branch",
            ["branches", "default"],
            branches={
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BRANCHES,
                "items": _obj(
                    ["if", "next"],
                    next=STEP_ID,
                    **{
                        "if": {
                            "anyOf": [
                                FILTER_DOC,
                                _obj([LAST_SEND], **{LAST_SEND: {"enum": LAST_SEND_STATUSES}}),
                            ]
                        }
                    },
                ),
            },
            default=STEP_ID,
        ),
        _step(
            "split",
            ["variants"],
            variants={
                "type": "array",
                "minItems": MIN_VARIANTS,
                "maxItems": MAX_VARIANTS,
                "items": _obj(
                    ["percent", "next"],
                    percent={"type": "integer", "minimum": 1, "maximum": 99},
                    next=STEP_ID,
                ),
                "description": "percents sum to 100; a user's variant is fixed by a hash",
            },
        ),
        _step(
            "send",
            ["channel", "template", "next"],
            channel={"enum": list(CHANNELS)},
            template=REFERENCE,
            next=STEP_ID,
        ),
        _step(
            "audience",
            ["add", "next"],
            add=REFERENCE,
            ttlSeconds=_null({"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECONDS}),
            next=STEP_ID,
            remove=NULL,
        ),
        _step(
            "audience",
            ["remove", "next"],
            remove=REFERENCE,
            next=STEP_ID,
            add=NULL,
            ttlSeconds=NULL,
        ),
        _step(
            "setAttributes",
            ["attributes", "next"],
            attributes={
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_SET_ATTRIBUTES,
                "propertyNames": NAME,
            },
            next=STEP_ID,
        ),
        _step(
            "webhook",
            ["url", "next"],
            url={
                "type": "string",
                "pattern": whole(r"[Hh][Tt][Tt][Pp][Ss]?://\S+"),
                "description": "an http(s) URL with a host (and a valid port); no spaces",
                "maxLength": MAX_URL,
            },
            body={"description": "any JSON (at most 64 KiB); templated"},
            saveAs=_null(
                {
                    "type": "string",
                    "pattern": whole("[A-Za-z_][A-Za-z0-9_]{0,63}"),
                    "not": {"enum": ["entry", "saved"]},
                }
            ),
            next=STEP_ID,
        ),
        _step("exit", []),
    ],
    "description": "a step; `next` (and `onTimeout`, `default`...) name other steps' ids",
}
STEPS_DOC: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_STEPS,
    "items": STEP_DOC,
    "description": "the steps; every run starts at the first. Ids unique, every edge names a "
    "step, every step reachable, every loop through a waiting step.",
}


def _journey_fields(*, required: bool) -> dict[str, fields.Field]:
    return {
        "name": name_field(required=required),
        "trigger": fields.Raw(required=required, metadata=TRIGGER_DOC),
        "entry": fields.Raw(allow_none=True, metadata=ENTRY_DOC),
        "exit": fields.Raw(allow_none=True, metadata=EXIT_DOC),
        "goal": fields.Raw(allow_none=True, metadata=GOAL_DOC),
        "steps": fields.Raw(required=required, metadata=STEPS_DOC),
    }


JourneyInputSchema = Schema.from_dict(_journey_fields(required=True), name="JourneyInputSchema")
JourneyInputSchema.__doc__ = "A journey to create or replace (PUT: absent fields reset)."
JourneyPatchSchema = Schema.from_dict(_journey_fields(required=False), name="JourneyPatchSchema")
JourneyPatchSchema.__doc__ = "Fields of a journey to change (each replaced whole)."


class JourneySchema(Schema):
    """A stored journey: the current version's definition, references as ids."""

    id = fields.Int()
    name = fields.Str()
    status = fields.Str(metadata={"enum": list(STATUSES)})
    statusReason = fields.Str(attribute="status_reason", allow_none=True)
    version = fields.Int(metadata={"description": "the version new runs start on"})
    trigger = fields.Method("_trigger", metadata={"type": "object"})
    entry = fields.Method("_entry", metadata={"type": "object"})
    exit = fields.Method("_exit", metadata={"type": "array", "items": {"type": "object"}})
    goal = fields.Method("_goal", allow_none=True, metadata={"type": "object"})
    steps = fields.Method("_steps", metadata={"type": "array", "items": {"type": "object"}})
    createdAt = fields.DateTime(attribute="created_at")
    updatedAt = fields.DateTime(attribute="updated_at")
    activatedAt = fields.DateTime(attribute="activated_at", allow_none=True)

    def _trigger(self, journey: Any) -> dict[str, Any]:
        return journey.definition["trigger"]

    def _entry(self, journey: Any) -> dict[str, Any]:
        return journey.definition.get("entry") or {"policy": "once", "existingMembers": False}

    def _exit(self, journey: Any) -> list[Any]:
        return journey.definition.get("exit") or []

    def _goal(self, journey: Any) -> dict[str, Any] | None:
        return journey.definition.get("goal")

    def _steps(self, journey: Any) -> list[Any]:
        return journey.definition["steps"]


class JourneyListSchema(Schema):
    """A page of journeys."""

    data = fields.List(fields.Nested(JourneySchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class JourneyListArgsSchema(PageArgsSchema):
    """`?status=` besides the page."""

    status = fields.Str(validate=validate.OneOf(STATUSES))


class RunSchema(Schema):
    """One user's run through the journey."""

    id = fields.Int()
    userId = fields.Str(attribute="user_external_id")
    version = fields.Int(metadata={"description": "the journey version it runs on"})
    status = fields.Str(metadata={"enum": list(RUN_STATUSES)})
    step = fields.Str(allow_none=True, metadata={"description": "the current step id"})
    wakeAt = fields.DateTime(attribute="wake_at", allow_none=True)
    entryKey = fields.Str(attribute="entry_key")
    enteredAt = fields.DateTime(attribute="entered_at")
    endedAt = fields.DateTime(attribute="ended_at", allow_none=True)
    exitReason = fields.Str(attribute="exit_reason", allow_none=True)


class RunListSchema(Schema):
    """A page of runs."""

    data = fields.List(fields.Nested(RunSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class RunListArgsSchema(PageArgsSchema):
    """`?status=`, `?userId=` besides the page."""

    status = fields.Str(validate=validate.OneOf(RUN_STATUSES))
    userId = user_id_field()


class EnterSchema(Schema):
    """`POST /v1/journeys/{id}/enter`: the user (created on first sight) and entry params."""

    userId = user_id_field(required=True)
    params = fields.Dict(
        allow_none=True,
        metadata={"description": "the entry's properties: `entry.key`, matchOn, templates"},
    )


class EnterResultSchema(Schema):
    """Whether the user entered, why not, and the run."""

    entered = fields.Bool(required=True)
    reason = fields.Str(metadata={"description": "why not (the entry policy's reason)"})
    run = fields.Nested(RunSchema)


class StepMessagesSchema(Schema):
    """A send step's messages (funnel: a clicked message counts as sent, delivered, opened)."""

    sent = fields.Int()
    delivered = fields.Int()
    opened = fields.Int()
    clicked = fields.Int()
    failed = fields.Int()
    total = fields.Int()


class StepStatsSchema(Schema):
    """One step of the current version."""

    id = fields.Str()
    type = fields.Str()
    entered = fields.Int(metadata={"description": "arrivals at the step (all versions)"})
    waiting = fields.Int(metadata={"description": "live runs at the step now"})
    passed = fields.Int(metadata={"description": "arrivals that left it"})
    outcomes = fields.Dict(
        keys=fields.Str(),
        values=fields.Int(),
        metadata={"description": "by edge: next, onTimeout, a branch index, default, exited..."},
    )
    exited = fields.Int()
    converted = fields.Int()
    messages = fields.Nested(StepMessagesSchema, metadata={"description": "send steps only"})


class RunTotalsSchema(Schema):
    """The journey's runs."""

    entered = fields.Int()
    active = fields.Int(metadata={"description": "live: active or waiting"})
    waiting = fields.Int()
    exited = fields.Int()
    converted = fields.Int()


class JourneyStatsSchema(Schema):
    """Runs and per-step figures."""

    journeyId = fields.Int()
    version = fields.Int()
    runs = fields.Nested(RunTotalsSchema)
    steps = fields.List(fields.Nested(StepStatsSchema))
