"""Schemas of /v1/rules.

`when`, `if` and `then` are checked by `journeys.rules` (paths like `then[0].addToAudience` in
the errors); their JSON Schemas here document exactly what that code accepts.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from app.schemas.common import Boolean, Integer, name_field
from app.schemas.filters import FILTER, WHERE, ref
from journeys.rules.definition import (
    MAX_ACTIONS,
    MAX_ID,
    MAX_NAME,
    MAX_PRIORITY,
    MAX_SET_ATTRIBUTES,
    MAX_TTL_SECONDS,
)
from journeys.text import VISIBLE_PATTERN

NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME}
REFERENCE = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": VISIBLE_PATTERN},
    ],
    "description": "an id or a unique name (stored as the id); an unknown one is a 404",
}
SCALAR_OR_NULL = {"type": ["string", "number", "boolean", "null"]}


def _one(key: str, value: dict[str, Any], **others: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: value, **others},
        "additionalProperties": False,
    }


WHEN_DOC: dict[str, Any] = {
    "oneOf": [
        _one("event", NAME, where=WHERE),
        _one("audienceEntered", REFERENCE),
        _one("audienceLeft", REFERENCE),
        _one("attributeChanged", NAME, **{"from": SCALAR_OR_NULL, "to": SCALAR_OR_NULL}),
    ],
    "description": (
        "the trigger: an event (with `where` on its properties), entering or leaving an "
        "audience, or an attribute changing (`from`/`to` restrict the values; null = absent)"
    ),
}
IF_DOC: dict[str, Any] = {
    "anyOf": [ref(FILTER), {"type": "null"}],
    "description": "a segment filter the user must match when the rule triggers; null = always",
}
ATTRIBUTES = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": MAX_SET_ATTRIBUTES,
    "propertyNames": {"minLength": 1, "maxLength": MAX_NAME},
    "description": "attributes to merge into the profile; null deletes one",
}
ACTION = {
    "oneOf": [
        _one(
            "addToAudience",
            REFERENCE,
            ttlSeconds={
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECONDS},
                    {"type": "null"},
                ]
            },
        ),
        _one("removeFromAudience", REFERENCE),
        _one("setAttributes", ATTRIBUTES),
        _one("sendCampaign", REFERENCE),
        _one(
            "startJourney",
            REFERENCE,
            params={
                "anyOf": [{"type": "object"}, {"type": "null"}],
                "description": "the run's params (templates read them as params.*)",
            },
        ),
    ],
}
THEN_DOC: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_ACTIONS,
    "items": ACTION,
    "description": "the actions, applied in order",
}


def _rule_fields(*, required: bool) -> dict[str, fields.Field]:
    return {
        "name": name_field(required=required),
        "enabled": Boolean(metadata={"description": "default true"}),
        "priority": Integer(
            validate=validate.Range(-MAX_PRIORITY, MAX_PRIORITY),
            metadata={"description": "lower runs first; ties in id order (default 0)"},
        ),
        "when": fields.Raw(required=required, metadata=WHEN_DOC),
        "if_": fields.Raw(data_key="if", allow_none=True, metadata=IF_DOC),
        "then": fields.Raw(required=required, metadata=THEN_DOC),
    }


RuleInputSchema = Schema.from_dict(_rule_fields(required=True), name="RuleInputSchema")
RuleInputSchema.__doc__ = "A rule to create or replace (PUT: an absent `if` clears it)."
RulePatchSchema = Schema.from_dict(_rule_fields(required=False), name="RulePatchSchema")
RulePatchSchema.__doc__ = "Fields of a rule to change."


class RuleSchema(Schema):
    """A rule as stored: references are ids, `where` and `if` normalized condition trees."""

    id = fields.Int()
    name = fields.Str()
    enabled = fields.Bool()
    priority = fields.Int()
    when = fields.Dict(metadata={"description": "the trigger, normalized"})
    if_ = fields.Dict(
        data_key="if",
        attribute="condition",
        allow_none=True,
        metadata={"description": "the normalized condition tree, null = always"},
    )
    then = fields.List(fields.Dict(), attribute="actions")
    createdAt = fields.DateTime(attribute="created_at")
    updatedAt = fields.DateTime(attribute="updated_at")


class RuleListSchema(Schema):
    """A page of rules."""

    data = fields.List(fields.Nested(RuleSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class RuleFiringSchema(Schema):
    """One time the rule matched its trigger for a user (or a global event)."""

    id = fields.Int()
    userId = fields.Str(attribute="user_external_id", allow_none=True)
    eventId = fields.Int(attribute="event_id", allow_none=True)
    cause = fields.Dict(
        metadata={
            "description": 'what triggered it, e.g. {"event": "purchase"} or '
            '{"audienceEntered": "3", "audience": "Bought"}, with "chain": the rule ids before'
        }
    )
    depth = fields.Int(metadata={"description": "0 for the event itself, +1 per rule before"})
    status = fields.Str(
        validate=validate.OneOf(["fired", "skipped", "stopped"]),
        metadata={"description": "fired | skipped (`if` false) | stopped (chain bound)"},
    )
    reason = fields.Str(allow_none=True)
    actions = fields.List(fields.Dict(), metadata={"description": "per action, its result"})
    at = fields.DateTime()


class RuleFiringListSchema(Schema):
    """A page of firings, newest first."""

    data = fields.List(fields.Nested(RuleFiringSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")
