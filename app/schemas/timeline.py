"""GET /v1/users/{userId}/timeline: its query arguments and one schema per kind of item."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from app.schemas.common import Cursor, PageArgsSchema, whole
from app.services.timeline import KINDS, decode_cursor

_KIND = "|".join(KINDS)
KINDS_PATTERN = whole(rf"(?:{_KIND})(?:,(?:{_KIND}))*")


class TimelineCursor(Cursor):
    """`nextCursor` of the previous page, loaded as the timeline position it stands for."""

    @staticmethod
    def decode(text: str) -> Any:
        """The timeline position `text` stands for; ValueError when malformed."""
        return decode_cursor(text)


class Kinds(fields.Str):
    """`event,message`: the kinds to list, loaded as a list."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.match(KINDS_PATTERN, text):
            raise ValidationError(f"comma-separated: {', '.join(KINDS)}")
        return list(dict.fromkeys(text.split(",")))


class TimelineArgsSchema(PageArgsSchema):
    """`?limit=`, `?cursor=` (a timeline position) and `?kinds=`."""

    cursor = TimelineCursor(
        metadata={
            "format": "timeline-cursor",
            "description": "`nextCursor` of the previous page (opaque; a malformed one is a 400)",
        }
    )
    kinds = Kinds(
        metadata={
            "pattern": KINDS_PATTERN,
            "description": f"only these kinds, comma-separated: {', '.join(KINDS)}",
        }
    )


def _kind(name: str) -> fields.Str:
    return fields.Str(required=True, validate=validate.OneOf([name]))


class _Item(Schema):
    at = fields.DateTime(required=True, metadata={"description": "when it happened (UTC)"})


class TimelineEventSchema(_Item):
    """A tracked event (`source` internal: a delivery outcome)."""

    kind = _kind("event")
    id = fields.Int(required=True)
    name = fields.Str(required=True)
    properties = fields.Dict(required=True)
    source = fields.Str(
        required=True, metadata={"description": "api, pixel, segment, sdk, internal"}
    )


class TimelineAudienceSchema(_Item):
    """The user joined or left an audience."""

    kind = _kind("audience")
    audienceId = fields.Int(required=True)
    audience = fields.Str(required=True, metadata={"description": "its name"})
    change = fields.Str(required=True, validate=validate.OneOf(["joined", "left"]))
    cause = fields.Str(required=True, metadata={"description": "api, rule, topic, ttl or journey"})


class TimelineRuleSchema(_Item):
    """A rule evaluated for the user: fired, skipped (`if` false) or stopped (chain bound)."""

    kind = _kind("rule")
    ruleId = fields.Int(required=True)
    rule = fields.Str(required=True, metadata={"description": "its name"})
    status = fields.Str(required=True, metadata={"description": "fired, skipped or stopped"})
    reason = fields.Str(required=True, allow_none=True)
    cause = fields.Dict(required=True, metadata={"description": "what triggered it"})
    actions = fields.List(
        fields.Dict(), required=True, metadata={"description": "each action and its result"}
    )
    depth = fields.Int(required=True, metadata={"description": "0 for the event itself"})
    eventId = fields.Int(required=True, allow_none=True)


class TimelineHistorySchema(Schema):
    """A status change of a message."""

    status = fields.Str(required=True)
    reason = fields.Str(required=True, allow_none=True)
    at = fields.DateTime(required=True)


class TimelineMessageSchema(_Item):
    """A message to the user (at: when it was queued), with its status history."""

    kind = _kind("message")
    id = fields.Int(required=True)
    channel = fields.Str(required=True)
    status = fields.Str(required=True)
    reason = fields.Str(required=True, allow_none=True)
    campaignId = fields.Int(required=True, allow_none=True)
    sendId = fields.Int(required=True, allow_none=True)
    history = fields.List(fields.Nested(TimelineHistorySchema), required=True)


class TimelineSkipSchema(_Item):
    """A send that did not reach the user, and why (`holdout`: the campaign's holdout)."""

    kind = _kind("skip")
    campaignId = fields.Int(required=True, allow_none=True)
    sendId = fields.Int(required=True, allow_none=True)
    channel = fields.Str(required=True, allow_none=True)
    reason = fields.Str(
        required=True,
        metadata={
            "description": "not_in_target, no_address, opted_out, capped, quiet_hours, "
            "holdout, outside_window, ..."
        },
    )
    detail = fields.Str(required=True, allow_none=True)


class TimelineJourneySchema(_Item):
    """A journey run arriving at a step (at: when), and how it left it."""

    kind = _kind("journey")
    journeyId = fields.Int(required=True)
    journey = fields.Str(required=True, metadata={"description": "its name"})
    runId = fields.Int(required=True)
    step = fields.Str(required=True)
    visit = fields.Int(required=True, metadata={"description": "1 the first time at the step"})
    outcome = fields.Str(
        required=True,
        allow_none=True,
        metadata={
            "description": "the edge it left by (next, onTimeout, branches[i], default, "
            "variants[i]), exited or converted; null while still at the step"
        },
    )
    leftAt = fields.DateTime(required=True, allow_none=True)
    runStatus = fields.Str(required=True, metadata={"description": "the run's status now"})
    exitReason = fields.Str(required=True, allow_none=True)


ITEM_SCHEMAS: dict[str, type[Schema]] = {
    "event": TimelineEventSchema,
    "audience": TimelineAudienceSchema,
    "rule": TimelineRuleSchema,
    "journey": TimelineJourneySchema,
    "message": TimelineMessageSchema,
    "skip": TimelineSkipSchema,
}
_dumpers = {kind: schema() for kind, schema in ITEM_SCHEMAS.items()}


def dump_item(item: dict[str, Any]) -> dict[str, Any]:
    """One item as JSON, by its kind's schema."""
    return _dumpers[item["kind"]].dump(item)


TIMELINE_RESPONSE: dict[str, Any] = {
    "200": {
        "description": "one page, newest first",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["data", "nextCursor"],
                    "properties": {
                        "data": {
                            "type": "array",
                            "items": {"oneOf": list(ITEM_SCHEMAS.values())},
                        },
                        "nextCursor": {
                            "type": ["string", "null"],
                            "description": "the next page's `?cursor=`; null on the last page",
                        },
                    },
                }
            }
        },
    }
}
