"""Schemas of /v1/events."""

from marshmallow import Schema, fields


class EventSchema(Schema):
    """One event (the body may also be an array of these, ≤1000)."""

    name = fields.Str(required=True)
    userId = fields.Str()
    anonymousId = fields.Str()
    properties = fields.Dict()
    timestamp = fields.DateTime(metadata={"description": "ISO 8601, default now"})
    messageId = fields.Str(metadata={"description": "idempotency key, once per project"})


class TrackResponseSchema(Schema):
    """Counts of a track call; `errors` holds rejected items by index."""

    accepted = fields.Int()
    duplicates = fields.Int()
    rejected = fields.Int()
    errors = fields.Dict()
