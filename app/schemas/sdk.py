"""Schemas of /sdk: what the service worker reports."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.schemas.common import MAX_ROW_ID, Integer

KINDS = ("delivered",)


class SdkEventSchema(Schema):
    """POST /sdk/events: a report from the service worker about one push message."""

    key = fields.Str(
        validate=validate.Length(min=1, max=255),
        metadata={
            "description": "the publishable key (pk_...), here because a worker posts without "
            "a CORS preflight (text/plain, no headers); else the Authorization header"
        },
    )
    kind = fields.Str(
        required=True,
        validate=validate.OneOf(KINDS),
        metadata={"description": "`delivered`: the browser showed the notification"},
    )
    messageId = Integer(
        required=True,
        validate=validate.Range(min=1, max=MAX_ROW_ID),
        metadata={"description": "the push payload's `messageId`"},
    )


class SdkEventResultSchema(Schema):
    """Whether this report was recorded (false: already recorded, or not a push message
    of this project)."""

    recorded = fields.Bool(required=True)
