"""Schemas of /v1/events.

The body is parsed by hand (`app.services.events.parse_event`, the hot path); these JSON
Schemas document exactly what that parser accepts. What JSON Schema cannot say is in the
descriptions: a timestamp is ISO 8601 as Python reads it and must fall inside the allowed
skew (`format: event-timestamp`), and an event over the size limit is a 413.
"""

from typing import Any

from marshmallow import Schema, fields

from app.services.events import MAX_ID, MAX_NAME, RESERVED_MESSAGE_ID_PATTERN

BATCH_LIMIT = 1000


def ref(name: str) -> dict[str, str]:
    """A reference to a component registered by `app.api.register_api`."""
    return {"$ref": f"#/components/schemas/{name}"}


def one_or_batch(item: str, what: str) -> dict[str, Any]:
    """One `item` object, or an array of up to 1000 items at least one of which is valid."""
    return {
        "anyOf": [
            ref(item),
            {
                "type": "array",
                "minItems": 1,
                "maxItems": BATCH_LIMIT,
                "contains": ref(item),
                "description": f"a batch of 1-{BATCH_LIMIT} {what} (more is a 413); invalid "
                "items are reported by index and do not sink the others, but at least one "
                "must be valid (else 422)",
            },
        ]
    }


def formatted(fmt: str, description: str, *, others: tuple[str, ...] = ("null",)) -> dict:
    """A string of a Cairn format, or one of the `others` types.

    A typed anyOf rather than `type: [string, null]`: generators apply a custom format's
    strategy only to a schema that is exactly `{type: string, format}`.
    """
    return {
        "anyOf": [
            {"type": "string", "format": fmt},
            {"type": others[0] if len(others) == 1 else list(others)},
        ],
        "description": description,
    }


# Ids: a string of 1-255 characters or an integer (stored as its text); null is absent.
# Python's `str.isspace` characters, spelled out: `\s` differs between Python and ECMA-262.
SPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
# Not only white space (the empty string matches: minLength says whether it is allowed).
NOT_BLANK = f"^(?![{SPACE}]+(?![\\s\\S]))"
ID: dict[str, Any] = {
    "type": ["string", "integer", "null"],
    "minLength": 1,
    "maxLength": MAX_ID,
    "pattern": NOT_BLANK,
    "description": f"1-{MAX_ID} characters, not blank; an integer is taken as its text",
}
TIMESTAMP = formatted(
    "event-timestamp",
    "ISO 8601 as Python's `datetime.fromisoformat` reads it (RFC 3339 date-times, dates, "
    "`20240131T1200`...), no offset = UTC; at most 24 hours ahead and 5 years back "
    "(MAX_FUTURE_SKEW_SECONDS, MAX_PAST_SKEW_SECONDS); default now",
)
USER_HASH: dict[str, Any] = {
    "description": "hex HMAC-SHA256(identity secret, userId): proves userId for a publishable "
    "key (required when the project sets identityVerification: required); or send the "
    "X-Cairn-User-Hash header. Any other value counts as no hash.",
}
EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One event; at most MAX_EVENT_BYTES (32 KiB) as compact JSON, else a 413.",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
        "userId": ID,
        "anonymousId": ID,
        "properties": {"type": ["object", "null"]},
        "timestamp": TIMESTAMP,
        "messageId": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": MAX_ID,
            "pattern": RESERVED_MESSAGE_ID_PATTERN,
            "description": "idempotency key, once per project",
        },
        "userHash": USER_HASH,
    },
}
COMPONENTS = {"Event": EVENT}
EVENTS_BODY = {
    "required": True,
    "content": {"application/json": {"schema": one_or_batch("Event", "events")}},
}


class TrackResponseSchema(Schema):
    """Counts of a track call; `errors` holds rejected items by index."""

    accepted = fields.Int(required=True)
    duplicates = fields.Int(required=True)
    rejected = fields.Int(required=True)
    errors = fields.Dict(
        keys=fields.Str(), values=fields.Dict(), required=True, metadata={"description": "by index"}
    )
