"""Schemas of /v1/inbox: the end user's inbox, its actions and its SSE stream."""

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, pre_load, validate

from app.services.inbox import MAX_ID, PAGE_MAX

_ID = validate.Range(min=1, max=MAX_ID, error="must be a message id (1 to 2^63-1)")
# A message id, or empty for none: EventSource sends an empty Last-Event-ID after an empty
# `id:` field, and hand-made clients send `lastEventId=` (both read as absent).
ID_OR_EMPTY: dict[str, Any] = {
    "type": ["integer", "string"],
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        {"type": "string", "maxLength": 0},
    ],
}


class EndUserArgsSchema(Schema):
    """Who is asking: the publishable key (EventSource cannot set headers), userId, userHash."""

    class Meta:
        # Browsers and SDKs add their own parameters (cache busters): ignore them.
        unknown = EXCLUDE

    key = fields.Str(
        metadata={
            "description": "the publishable key (pk_...); a secret key or token here is refused"
        }
    )
    userId = fields.Str(required=True, validate=validate.Length(min=1, max=255))
    userHash = fields.Str(
        metadata={"description": "hex HMAC-SHA256(identity secret, userId); not needed with sk"}
    )


class EndUserBodySchema(Schema):
    """userId and userHash may come in a JSON body instead of the query string."""

    class Meta:
        unknown = EXCLUDE

    userId = fields.Str(
        validate=validate.Length(min=1, max=255),
        metadata={"description": "wins over the query's; one of the two is required"},
    )
    userHash = fields.Str()


class EndUserActionArgsSchema(EndUserArgsSchema):
    """The query of an action: userId may be in the JSON body instead."""

    userId = fields.Str(
        validate=validate.Length(min=1, max=255),
        metadata={"description": "required here unless the JSON body has it (a 400)"},
    )


class InboxListArgsSchema(EndUserArgsSchema):
    """A page of the inbox."""

    limit = fields.Int(
        load_default=50,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": f"1-1000, default 50; at most {PAGE_MAX} are returned"},
    )
    cursor = fields.Int(validate=_ID, metadata={"description": "`nextCursor` of the previous page"})
    archived = fields.Bool(load_default=False, metadata={"description": "list the archive"})


def _drop_empty(data: Any, name: str) -> Any:
    # EventSource sends no Last-Event-ID after an empty `id:`; hand-made clients send "".
    if hasattr(data, "get") and data.get(name) == "":
        return {k: v for k, v in data.items() if k != name}
    return data


class StreamArgsSchema(EndUserArgsSchema):
    """The stream's query: `lastEventId` stands in for the header when a client cannot set it."""

    lastEventId = fields.Int(
        validate=validate.Range(min=0, max=MAX_ID),
        metadata={**ID_OR_EMPTY, "description": "replay what was sent after this message id"},
    )

    @pre_load
    def _empty_is_absent(self, data: Any, **_: Any) -> Any:
        return _drop_empty(data, "lastEventId")


class StreamHeadersSchema(Schema):
    """The header EventSource sends on reconnect."""

    class Meta:
        unknown = EXCLUDE

    last_event_id = fields.Int(
        data_key="Last-Event-ID",
        validate=validate.Range(min=0, max=MAX_ID),
        metadata={
            **ID_OR_EMPTY,
            "description": "the last message id received; newer ones are replayed",
        },
    )

    @pre_load
    def _empty_is_absent(self, data: Any, **_: Any) -> Any:
        # Only our header, looked up case-insensitively; an empty one is no header.
        value = data.get("Last-Event-ID")
        return {"Last-Event-ID": value} if value not in (None, "") else {}


class InboxItemSchema(Schema):
    """One inbox entry (also the `data` of a stream `message` event)."""

    id = fields.Int(required=True)
    title = fields.Str(allow_none=True)
    body = fields.Str(allow_none=True)
    url = fields.Str(allow_none=True)
    data = fields.Raw(allow_none=True)
    count = fields.Int(metadata={"description": "how many times it was incremented"})
    replaces = fields.Int(allow_none=True, metadata={"description": "the message it replaces"})
    createdAt = fields.DateTime(attribute="created_at")
    readAt = fields.DateTime(attribute="read_at", allow_none=True)
    archived = fields.Bool()


# One event of the stream (before OpenAPI 3.2's `itemSchema`, a text/event-stream `schema`
# describes each event): its `data` is an inbox item as JSON text, its `id` the message id.
STREAM_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "message"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/InboxItem"},
        },
    },
}


class InboxPageSchema(Schema):
    """A page of the inbox, newest first."""

    data = fields.List(fields.Nested(InboxItemSchema), attribute="items")
    unreadCount = fields.Int(attribute="unread_count")
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class MarkResultSchema(Schema):
    """How many messages changed (0 when already read or archived)."""

    updated = fields.Int()
