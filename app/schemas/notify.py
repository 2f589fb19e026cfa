"""Schemas of POST /v1/notify and /v1/notify/batch: direct sends without a stored campaign.

The fields are checked here; what JSON Schema says beside the properties (exactly one target,
title or body, no `incrementId` for segment and broadcast sends) is in `NOTIFY_BODY` and
`NOTIFY_BATCH_BODY`, and checked by `validates_schema` the same way. What needs the database
(a stored segment, a taken client id) and the 413 for more than 1000 userIds are the
service's (`app.services.messages.notify`).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from app.schemas.common import Boolean, Integer, user_id_field, whole
from app.schemas.events import NOT_BLANK
from app.schemas.filters import FILTER
from app.schemas.filters import ref as filter_ref
from app.services.messages import MAX_TTL, MAX_USERS, Notification, SendOptions
from workers.channels import CHANNELS

TARGETS = ("userId", "userIds", "segment", "broadcast")
ONE_TARGET = "give exactly one of userId, userIds, segment, broadcast"
MAX_CLIENT_ID = 255
CLIENT_ID = validate.Length(min=1, max=MAX_CLIENT_ID, error="a string of 1-255 characters")
CHANNEL_LIST = ", ".join(CHANNELS)


def _text(limit: int, description: str) -> fields.Str:
    return fields.Str(
        allow_none=True,
        validate=validate.Length(max=limit, error=f"a string of at most {limit} characters"),
        metadata={"description": description},
    )


def channels_field(*, min_items: int, description: str) -> fields.List:
    """A list of known channels (duplicates are dropped); null or absent is the default."""
    return fields.List(
        fields.Str(validate=validate.OneOf(list(CHANNELS), error=f"one of {CHANNEL_LIST}")),
        allow_none=True,
        validate=validate.Length(min=min_items, error=f"one or more of {CHANNEL_LIST}"),
        metadata={"description": description},
    )


def ttl_field() -> Integer:
    """`ttlSeconds`: how long a message may wait before it expires unsent."""
    return Integer(
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_TTL, error=f"1-{MAX_TTL}"),
        metadata={"description": "expire a message not sent within this many seconds"},
    )


def transactional_field() -> Boolean:
    """`transactional`: bypasses quiet hours and frequency caps."""
    return Boolean(load_default=False, metadata={"description": "bypasses quiet hours and caps"})


CATEGORIES = ("marketing", "transactional")
URGENCIES = ("very-low", "low", "normal", "high")
TOPIC_KEY = r"[a-z0-9][a-z0-9_-]{0,63}"


class DeliveryOptions(Schema):
    """What every send takes besides its channels and TTL: its category, topic and urgency.

    `category` is `marketing` (the default: opt-outs, topics, quiet hours and caps apply) or
    `transactional` (receipts, codes: those are skipped, never a hard bounce or a STOP);
    `transactional: true` is the older spelling of the same thing.
    """

    transactional = transactional_field()
    category = fields.Str(
        allow_none=True,
        validate=validate.OneOf(CATEGORIES, error="marketing or transactional"),
        metadata={"description": "marketing (default) or transactional"},
    )
    topic = fields.Str(
        allow_none=True,
        validate=validate.Regexp(whole(TOPIC_KEY), error="a topic key of settings.topics"),
        metadata={"description": "a topic of the project: only its subscribers are reached"},
    )
    urgency = fields.Str(
        allow_none=True,
        validate=validate.OneOf(URGENCIES, error="very-low, low, normal or high"),
        metadata={"description": "push Urgency (RFC 8030); default normal"},
    )

    @validates_schema
    def _one_category(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("transactional") and data.get("category") == "marketing":
            raise ValidationError({"category": ["transactional: true says otherwise"]})
        if data.get("topic") and is_transactional(data):
            raise ValidationError({"topic": ["topics are for marketing sends"]})


def is_transactional(data: dict[str, Any]) -> bool:
    """Whether loaded `DeliveryOptions` fields make a transactional send."""
    return bool(data.get("transactional")) or data.get("category") == "transactional"


def client_id_field(description: str) -> fields.Str:
    """`id` or `incrementId`: a client's string of 1-255 characters."""
    return fields.Str(allow_none=True, validate=CLIENT_ID, metadata={"description": description})


OVERRIDES_DOC = {
    "description": "per channel fields (`{email: {subject: ...}}`), rendered like the content",
    "properties": {channel: {"type": "object"} for channel in CHANNELS},
    "additionalProperties": False,
}


class Overrides(fields.Dict):
    """`{channel: {field: template}}`; a bad entry is named `overrides.<channel>`."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        value = super()._deserialize(value, attr, data, **kwargs)
        problems = {
            channel: [f"an object per channel ({CHANNEL_LIST})"]
            for channel, fields_ in value.items()
            if channel not in CHANNELS or not isinstance(fields_, dict)
        }
        if problems:
            raise ValidationError(problems)
        return value


def overrides_field() -> Overrides:
    """`overrides`, documented with its channels."""
    return Overrides(allow_none=True, metadata=OVERRIDES_DOC)


def given_targets(data: dict[str, Any]) -> list[str]:
    """The targets a body names: present and neither null nor `false`."""
    return [name for name in TARGETS if data.get(name) not in (None, False)]


def _check_segment(data: dict[str, Any]) -> None:
    # The empty object form matches everybody: a send to all says so with `broadcast`.
    if data.get("segment") == {}:
        raise ValidationError({"segment": ["an empty filter: to send to everybody, broadcast"]})


class NotifySchema(DeliveryOptions):
    """One target (userId, userIds, segment or broadcast) and the content."""

    userId = user_id_field(allow_none=True, metadata={"description": "one user"})
    userIds = fields.List(
        user_id_field(),
        allow_none=True,
        validate=validate.Length(min=1, error="strings of 1-255 characters"),
        metadata={"description": f"at most {MAX_USERS} users (more is a 413)"},
    )
    segment = fields.Raw(
        allow_none=True,
        metadata={
            # A blank string or an empty object is no segment (everybody is `broadcast`);
            # minLength and pattern bind strings only, minProperties objects only.
            "anyOf": [
                {
                    "allOf": [filter_ref(FILTER)],
                    "minLength": 1,
                    "pattern": NOT_BLANK,
                    "minProperties": 1,
                },
                {"type": "null"},
            ],
            "description": "a segment filter in any form, or a stored segment's id or name "
            "(an unknown one is a 404)",
        },
    )
    broadcast = Boolean(allow_none=True, metadata={"description": "true: every user"})
    title = _text(1000, "rendered per user like a template")
    body = _text(10_000, "title or body is required")
    url = _text(2048, "where a click leads")
    data = fields.Dict(allow_none=True, metadata={"description": "`data.*` in the templates"})
    channels = channels_field(min_items=1, description="default [inapp]")
    ttlSeconds = ttl_field()
    id = client_id_field("client id; sent again answers 409 id/exists")
    incrementId = client_id_field("userId/userIds only: stack similar messages in a window")
    overrides = overrides_field()

    @validates_schema
    def _one_target_and_some_content(self, data: dict[str, Any], **_: Any) -> None:
        given = given_targets(data)
        if len(given) != 1:
            raise ValidationError({name: [ONE_TARGET] for name in (given or ["userId"])})
        _check_segment(data)
        if data.get("incrementId") is not None and given[0] in ("segment", "broadcast"):
            raise ValidationError({"incrementId": ["only for userId or userIds sends"]})
        if not data.get("title") and not data.get("body"):
            raise ValidationError({"body": ["title or body is required"]})

    @post_load
    def _typed(self, data: dict[str, Any], **_: Any) -> Notification:
        [target] = given_targets(data)
        content = {
            name: data[name]
            for name in ("title", "body", "url", "data", "overrides")
            if data.get(name) is not None
        }
        return Notification(
            content=content,
            options=SendOptions(
                channels=list(dict.fromkeys(data.get("channels") or ["inapp"])),
                ttl_seconds=data.get("ttlSeconds"),
                transactional=is_transactional(data),
                topic=data.get("topic"),
                urgency=data.get("urgency"),
            ),
            user_ids=[data["userId"]] if target == "userId" else data.get("userIds"),
            segment=data["segment"] if target == "segment" else None,
            broadcast=target == "broadcast",
            client_id=data.get("id"),
            increment_id=data.get("incrementId"),
        )


class NotifyBatchSchema(NotifySchema):
    """A segment send: `{segment: "plan:pro,role:admin", title, body}`."""

    @validates_schema
    def _one_target_and_some_content(self, data: dict[str, Any], **_: Any) -> None:
        if given_targets(data) != ["segment"]:
            raise ValidationError({"segment": ["required, and the only target"]})
        _check_segment(data)
        if data.get("incrementId") is not None:
            raise ValidationError({"incrementId": ["only for userId or userIds sends"]})
        if not data.get("title") and not data.get("body"):
            raise ValidationError({"body": ["title or body is required"]})


def _given(name: str) -> dict[str, Any]:
    """A target that is there: neither absent nor null (nor false, for broadcast)."""
    value: dict[str, Any] = {"const": True} if name == "broadcast" else {"not": {"type": "null"}}
    return {"required": [name], "properties": {name: value}}


_NOT_GIVEN: dict[str, Any] = {"type": "null"}
_SOME_CONTENT = {
    "anyOf": [
        {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
        for name in ("title", "body")
    ],
    "description": "title or body (not empty) is required",
}
_NO_INCREMENT = {"properties": {"incrementId": _NOT_GIVEN}}


def _json_body(*parts: Any) -> dict[str, Any]:
    """A required JSON request body whose schema is all of `parts`."""
    return {
        "required": True,
        "content": {"application/json": {"schema": {"allOf": list(parts)}}},
    }


def notify_body(schema: type[Schema]) -> dict[str, Any]:
    """POST /v1/notify: the schema's fields, exactly one target, some content."""
    return _json_body(
        schema,
        _SOME_CONTENT,
        {"oneOf": [_given(name) for name in TARGETS], "description": ONE_TARGET},
        {
            "anyOf": [_NO_INCREMENT, _given("userId"), _given("userIds")],
            "description": "incrementId only with userId or userIds",
        },
    )


def notify_batch_body(schema: type[Schema]) -> dict[str, Any]:
    """POST /v1/notify/batch: a segment is the one target."""
    return _json_body(
        schema,
        _SOME_CONTENT,
        _given("segment"),
        {
            "properties": {
                "userId": _NOT_GIVEN,
                "userIds": _NOT_GIVEN,
                "broadcast": {"enum": [False, None]},
                "incrementId": _NOT_GIVEN,
            },
            "description": "the segment is the only target",
        },
    )


class NotifyResultSchema(Schema):
    """The send request and, for user targets, what it created."""

    id = fields.Int(required=True)
    status = fields.Str(required=True, metadata={"description": "queued, or fanning_out"})
    messages = fields.Int(metadata={"description": "user targets: messages created"})
    deduplicated = fields.Int(metadata={"description": "user targets: addresses already sent"})
    unreachable = fields.Dict(
        keys=fields.Str(), values=fields.Int(), metadata={"description": "per channel"}
    )
    messageIds = fields.List(fields.Int())
