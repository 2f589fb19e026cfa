"""Schemas of the message log, POST /v1/messages (template messages), raw SMS and the sandbox.

A template message batch is checked item by item (`TemplateMessageSchema` on each): an item
the schema refuses is answered in its place and does not sink the others, so the document
says an array must hold at least one valid item (`contains`), as the ingestion batches do.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates

from app.errors import InvalidInput, TooLarge
from app.models.message import STATUSES
from app.schemas.common import PageArgsSchema, user_id_field
from app.schemas.notify import (
    MAX_CLIENT_ID,
    DeliveryOptions,
    channels_field,
    client_id_field,
    is_transactional,
    overrides_field,
    ttl_field,
)
from app.services.messages import USER_FILL, TemplateMessage
from app.services.named import MAX_ID, id_problem
from workers.channels import CHANNELS
from workers.channels.sms import MAX_BODY

MAX_TEMPLATE_MESSAGES = 50
MAX_RECIPIENTS = 1000
USER_FILL_FORMATS = {
    "userEmail": "email-address",
    "userPhone": "phone-number",
    "userLanguage": "bcp47",
    "userTimezone": "iana-timezone",
}


class TemplateRef(fields.Raw):
    """A template's id (an integer or its digits) or its name."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema's integers include 3.0
        if not (isinstance(value, str) and value) and not (
            isinstance(value, int) and not isinstance(value, bool)
        ):
            raise ValidationError("required: a template id or name")
        problem = id_problem(value)
        if problem is not None:
            raise ValidationError(problem)
        return value


class TemplateMessageSchema(DeliveryOptions):
    """One template message to one user (the body may be an array of up to 50)."""

    template = TemplateRef(
        required=True,
        metadata={
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "integer", "minimum": -MAX_ID - 1, "maximum": MAX_ID},
            ],
            "description": "the template's id or name (an unknown one is a 404)",
        },
    )
    userId = user_id_field(required=True, metadata={"description": "created on first sight"})
    data = fields.Dict(allow_none=True, metadata={"description": "`params.*` in the template"})
    id = client_id_field("client id; sent again answers id/exists")
    incrementId = client_id_field("stack similar messages in a window")
    userEmail = fields.Str(allow_none=True, metadata={"format": USER_FILL_FORMATS["userEmail"]})
    userPhone = fields.Str(allow_none=True, metadata={"format": USER_FILL_FORMATS["userPhone"]})
    userLanguage = fields.Str(
        allow_none=True, metadata={"format": USER_FILL_FORMATS["userLanguage"]}
    )
    userTimezone = fields.Str(
        allow_none=True, metadata={"format": USER_FILL_FORMATS["userTimezone"]}
    )
    overrides = overrides_field()
    channels = channels_field(min_items=0, description="default (null or []): the template's")
    ttlSeconds = ttl_field()

    @post_load
    def _typed(self, data: dict[str, Any], **_: Any) -> TemplateMessage:
        return TemplateMessage(
            template=data["template"],
            user_id=data["userId"],
            data=data.get("data") or {},
            channels=data.get("channels") or None,
            ttl_seconds=data.get("ttlSeconds"),
            transactional=is_transactional(data),
            topic=data.get("topic"),
            urgency=data.get("urgency"),
            client_id=data.get("id"),
            increment_id=data.get("incrementId"),
            overrides=data.get("overrides"),
            profile={
                column: data[name]
                for name, column in USER_FILL.items()
                if data.get(name) is not None
            },
        )


def client_id_of(item: Any) -> str | None:
    """The client id of an item the schema refused, when it has a usable one."""
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID else None


def template_messages_body(schema: type[Schema]) -> dict[str, Any]:
    """An object, or an array of 1-50 of them at least one of which is valid."""
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        schema,
                        {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_TEMPLATE_MESSAGES,
                            # apispec resolves schemas in oneOf, not in `contains`.
                            "contains": {"$ref": "#/components/schemas/TemplateMessage"},
                            "description": f"a batch of 1-{MAX_TEMPLATE_MESSAGES} (more is a "
                            "413); each item is answered in its place in `data`, an invalid one "
                            "with `ok: false`, but at least one must be valid (else 422)",
                        },
                    ]
                }
            }
        },
    }


class _MessageResult(Schema):
    """One template message's outcome; `<channel>Error` says why a channel was skipped."""

    ok = fields.Bool(required=True)
    id = fields.Str(
        required=True, allow_none=True, metadata={"description": "the client id or the send id"}
    )
    error = fields.Str(
        metadata={"description": "invalid, id/exists or template/not-found (batches only)"}
    )
    errors = fields.Dict(metadata={"description": "field path: [reasons]"})
    messageIds = fields.List(fields.Int())


# `emailError`, `smsError`...: one per channel the user cannot be reached on.
MessageResultSchema = type(
    "MessageResultSchema",
    (_MessageResult,),
    {
        f"{channel}Error": fields.Str(metadata={"description": f"why no {channel} message"})
        for channel in CHANNELS
    },
)


class MessageBatchResultSchema(Schema):
    """A batch's outcomes, in request order."""

    data = fields.List(fields.Nested(MessageResultSchema), required=True)


class SmsBody(fields.Str):
    """The text of an SMS: its refusals say how long it is (1-MAX_BODY characters)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        # A message of its own (not "Invalid input: body"): senders read it in their logs.
        if not text:
            raise InvalidInput(
                "body is required", {"body": [f"a string of 1-{MAX_BODY} characters"]}
            )
        if len(text) > MAX_BODY:
            raise InvalidInput(
                f"body is too long: {len(text)} characters, at most {MAX_BODY}",
                {"body": [f"too long: at most {MAX_BODY} characters"]},
            )
        return text


class RawSmsSchema(DeliveryOptions):
    """`{type: sms|mms, title?, body, recipients: [{to}]}`: one message per number."""

    type = fields.Str(
        load_default="sms", validate=validate.OneOf(["sms", "mms"], error="sms or mms")
    )
    title = fields.Str(allow_none=True, metadata={"description": "MMS subject"})
    body = SmsBody(required=True, metadata={"minLength": 1, "maxLength": MAX_BODY})
    recipients = fields.List(
        fields.Raw(allow_none=True),
        required=True,
        validate=validate.Length(min=1, error="a non-empty list"),
        metadata={
            "description": f"at most {MAX_RECIPIENTS} (more is a 413); a recipient without a "
            "valid number is reported in `errors` by index and does not sink the others, but "
            "one must be valid (else 422)",
            "items": {},
        },
    )
    ttlSeconds = ttl_field()

    @validates("recipients")
    def _not_too_many(self, value: list[Any], **_: Any) -> None:
        # A 413 like every batch over its limit, not the 422 of a bad value.
        if len(value) > MAX_RECIPIENTS:
            raise TooLarge("too many recipients", {"recipients": [f"at most {MAX_RECIPIENTS}"]})


def raw_sms_body(schema: type[Schema]) -> dict[str, Any]:
    """The body of POST /v1/messages/sms: some recipient must have a phone number."""
    recipient = {
        "type": "object",
        "required": ["to"],
        "properties": {"to": {"type": "string", "format": "phone-number"}},
    }
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [schema, {"properties": {"recipients": {"contains": recipient}}}]
                }
            }
        },
    }


class SmsResultSchema(Schema):
    """The SMS send and what it created."""

    id = fields.Int(required=True)
    messages = fields.Int(required=True)
    deduplicated = fields.Int(required=True)
    errors = fields.Dict(required=True, metadata={"description": "recipient index: {to: [reason]}"})


# --- Reading the log -------------------------------------------------------------------


class MessageLogArgsSchema(PageArgsSchema):
    """Filters of the message log, all optional."""

    userId = user_id_field(metadata={"description": "one user's messages"})
    sendId = fields.Int(
        validate=validate.Range(min=1, max=MAX_ID), metadata={"description": "a send"}
    )
    channel = fields.Str(validate=validate.OneOf(list(CHANNELS)))
    status = fields.Str(validate=validate.OneOf(list(STATUSES)))
    since = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "created at or after (UTC if no offset)"}
    )
    until = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "created before (UTC if no offset)"}
    )


class SandboxArgsSchema(PageArgsSchema):
    """Filters of the sandbox outbox."""

    channel = fields.Str(metadata={"description": "email, sms..."})
    to = fields.Str(metadata={"description": "the exact address"})


class MessageSchema(Schema):
    """One message and where it stands."""

    id = fields.Int()
    sendId = fields.Int(attribute="send_id", allow_none=True)
    userId = fields.Str(attribute="user_external_id", allow_none=True)
    channel = fields.Str()
    to = fields.Str(attribute="address")
    status = fields.Str()
    reason = fields.Str(allow_none=True)
    attempts = fields.Int()
    provider = fields.Str(allow_none=True)
    incrementId = fields.Str(attribute="increment_id", allow_none=True)
    incrementCount = fields.Int(attribute="increment_count")
    content = fields.Dict(attribute="rendered", allow_none=True)
    createdAt = fields.DateTime(attribute="created_at")
    sentAt = fields.DateTime(attribute="sent_at", allow_none=True)
    expiresAt = fields.DateTime(attribute="expires_at", allow_none=True)


class HistorySchema(Schema):
    """A status change."""

    status = fields.Str()
    reason = fields.Str(allow_none=True)
    at = fields.DateTime()


class MessageDetailSchema(MessageSchema):
    """A message with its status history."""

    history = fields.List(fields.Nested(HistorySchema))


class MessageListSchema(Schema):
    """A page of the message log."""

    data = fields.List(fields.Nested(MessageSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class SandboxMessageSchema(Schema):
    """What the sandbox provider kept instead of sending."""

    id = fields.Int(required=True)
    messageId = fields.Int(required=True, allow_none=True, attribute="message_id")
    channel = fields.Str(required=True)
    to = fields.Str(required=True)
    content = fields.Dict(required=True, allow_none=True)
    createdAt = fields.DateTime(required=True, attribute="created_at")


class SandboxPageSchema(Schema):
    """A page of the sandbox outbox, oldest first."""

    data = fields.List(fields.Nested(SandboxMessageSchema), required=True)
    nextCursor = fields.Str(required=True, allow_none=True, attribute="next_cursor")
