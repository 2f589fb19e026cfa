"""Schemas of /v1/push: the VAPID key and browser push subscriptions (API.md "Devices").

`subscription` is what the browser's `PushSubscription.toJSON()` gives (`endpoint`,
`expirationTime`, `keys: {p256dh, auth}`), taken as is. What needs the network or the database
(the endpoint's public address, the owner, the identity rule) is checked by
`app.services.push_subscriptions`, naming the same fields.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from app.schemas.common import user_id_field
from app.schemas.events import formatted
from app.services.push_subscriptions import MAX_TOPICS, SubscriptionRequest

# Exactly what decodes to 65 bytes starting 0x04 (an uncompressed P-256 point) and to 16
# bytes: the last character carries only 4 (2) bits, so its low bits are zero.
P256DH = validate.Regexp(
    r"^B[A-Za-z0-9_-]{85}[AEIMQUYcgkosw048]=?$",
    error="base64url of an uncompressed P-256 point (65 bytes, starting 0x04)",
)
AUTH = validate.Regexp(r"^[A-Za-z0-9_-]{21}[AQgw](==)?$", error="base64url of 16 bytes")
# An absolute http(s) URL with a plain host name or IPv4 address (no credentials, no IPv6
# literal); https on a public address is checked after DNS resolution by the service.
ENDPOINT = validate.Regexp(
    r"^https?://[A-Za-z0-9.-]*[A-Za-z0-9]"
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?"
    r"([/?#][\x21-\x7e]*)?$",
    error="an https:// URL",
)
TOPIC = validate.Regexp(
    r"^[A-Za-z0-9_.:-]{1,64}$", error="a topic key of 1-64 letters, digits, '_', '-', '.', ':'"
)


class BrowserText(fields.Raw):
    """A string of at most `limit` characters, documented by its format (`formatted`)."""

    def __init__(self, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str) or len(value) > self.limit:
            raise ValidationError(f"a string of at most {self.limit} characters")
        return value


class KeysSchema(Schema):
    """The subscriber's keys (RFC 8291): a P-256 public key and a 16-byte auth secret."""

    class Meta:
        unknown = EXCLUDE

    p256dh = fields.Str(
        required=True,
        validate=P256DH,
        metadata={"description": "base64url of the uncompressed P-256 point (65 bytes)"},
    )
    auth = fields.Str(
        required=True,
        validate=AUTH,
        metadata={"description": "base64url of the 16-byte auth secret"},
    )


class SubscriptionSchema(Schema):
    """A browser's PushSubscription as `toJSON()` gives it."""

    class Meta:
        unknown = EXCLUDE

    endpoint = fields.Str(
        required=True,
        validate=[validate.Length(min=1, max=2048), ENDPOINT],
        metadata={"description": "the push service URL: https on a public address"},
    )
    expirationTime = fields.Raw(allow_none=True, metadata={"description": "ignored"})
    keys = fields.Nested(KeysSchema, required=True)


class SubscribeSchema(Schema):
    """POST /v1/push/subscriptions: a device for a user (userHash with pk) or a visitor."""

    userId = user_id_field(
        allow_none=True,
        metadata={"description": "with a publishable key, needs userHash (API.md)"},
    )
    anonymousId = user_id_field(allow_none=True, metadata={"description": "a visitor"})
    userHash = fields.Str(
        allow_none=True, metadata={"description": "hex HMAC-SHA256(identity secret, userId)"}
    )
    subscription = fields.Nested(SubscriptionSchema, required=True)
    topics = fields.List(
        fields.Str(validate=TOPIC),
        load_default=list,
        validate=validate.Length(max=MAX_TOPICS, error=f"at most {MAX_TOPICS} topics"),
        metadata={"description": "topic keys the person chose in the prompt"},
    )
    # Formats JSON Schema cannot spell (checked by the service, documented as formats).
    timezone = BrowserText(64, allow_none=True, metadata=formatted("iana-timezone", "IANA zone"))
    language = BrowserText(35, allow_none=True, metadata=formatted("bcp47", "BCP 47 tag"))
    applicationServerKey = fields.Str(
        allow_none=True,
        validate=validate.Length(max=100),
        metadata={
            "description": "the VAPID key the browser subscribed with (default: the current "
            "one); a rotation between fetching the key and subscribing then cannot mismatch"
        },
    )

    @post_load
    def _typed(self, data: dict[str, Any], **_: Any) -> SubscriptionRequest:
        sub = data["subscription"]
        return SubscriptionRequest(
            endpoint=sub["endpoint"],
            p256dh=sub["keys"]["p256dh"],
            auth=sub["keys"]["auth"],
            topics=list(dict.fromkeys(data.get("topics") or [])),
            user_id=data.get("userId"),
            anonymous_id=data.get("anonymousId"),
            user_hash=data.get("userHash"),
            timezone=data.get("timezone"),
            language=data.get("language"),
            application_server_key=data.get("applicationServerKey"),
        )


class EndpointOnlySchema(Schema):
    """The subscription of a DELETE: its endpoint is enough (keys are ignored)."""

    class Meta:
        unknown = EXCLUDE

    endpoint = fields.Str(required=True, validate=validate.Length(min=1, max=2048))


class UnsubscribeSchema(Schema):
    """DELETE /v1/push/subscriptions: the browser's subscription (`{subscription: {endpoint}}`)."""

    class Meta:
        unknown = EXCLUDE

    subscription = fields.Nested(EndpointOnlySchema, required=True)


class SubscribedSchema(Schema):
    """The device as stored."""

    id = fields.Int(required=True)
    userId = fields.Str(allow_none=True, metadata={"description": "null: an anonymous visitor"})
    anonymous = fields.Bool(required=True)
    topics = fields.List(fields.Str(), required=True)
    active = fields.Bool(required=True)
    created = fields.Bool(required=True, metadata={"description": "false: an update"})
    applicationServerKey = fields.Str(required=True, metadata={"description": "its VAPID key"})


class UnsubscribedSchema(Schema):
    """How many devices the DELETE deactivated (0 or 1)."""

    deleted = fields.Int(required=True)


class VapidKeySchema(Schema):
    """The application server key browsers pass to `pushManager.subscribe`."""

    publicKey = fields.Str(
        required=True, metadata={"description": "base64url of the P-256 public key"}
    )


class PushDeviceSchema(Schema):
    """A device as GET /v1/users/{userId} lists it (no endpoint secrets or keys)."""

    id = fields.Int(required=True)
    pushService = fields.Str(allow_none=True, metadata={"description": "the endpoint's host"})
    topics = fields.List(fields.Str(), required=True)
    active = fields.Bool(required=True)
    deactivatedReason = fields.Str(allow_none=True)
    failures = fields.Int(required=True, metadata={"description": "permanent failures in a row"})
    timezone = fields.Str(allow_none=True)
    language = fields.Str(allow_none=True)
    userAgent = fields.Str(allow_none=True)
    createdAt = fields.Str(required=True)


# Beside the fields: a device belongs to someone, `userId` or `anonymousId` (or both).
SUBSCRIBE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "allOf": [
                    SubscribeSchema,
                    {
                        "anyOf": [
                            {
                                "required": [name],
                                "properties": {name: {"type": "string", "minLength": 1}},
                            }
                            for name in ("userId", "anonymousId")
                        ],
                        "description": "userId or anonymousId is required",
                    },
                ]
            }
        }
    },
}
