"""Schemas of /v1/users.

Upserts and erasures are parsed by hand (`app.services.profiles.parse_profile_change`,
`app.api.users.parse_erase_request`); these JSON Schemas document exactly what they accept.
Formats JSON Schema cannot check (`email-address`, `phone-number`, `bcp47`, `iana-timezone`)
are validated by the same libraries that normalize the values.
"""

from typing import Any

from marshmallow import Schema, fields

from app.schemas.audiences import MembershipSchema
from app.schemas.common import PageArgsSchema
from app.schemas.events import BATCH_LIMIT, NOT_BLANK, formatted, one_or_batch, ref
from app.schemas.push import PushDeviceSchema
from app.services.profiles import MAX_ID_LENGTH

EMAIL_DOC = "a deliverable-looking address (no DNS lookup), stored lower-cased"
PHONE_DOC = (
    "a valid number, +<country code> or national in the project's defaultRegion; "
    "normalized to E.164"
)
EMAIL = formatted("email-address", EMAIL_DOC)
PHONE = formatted("phone-number", PHONE_DOC)
ATTRIBUTES: dict[str, Any] = {
    "type": ["object", "null"],
    "propertyNames": {"minLength": 1, "maxLength": MAX_ID_LENGTH},
    "properties": {"$email": EMAIL, "$phone_number": PHONE},
    "description": "merged into the stored ones; null removes a key; `$email` and "
    "`$phone_number` are taken as email and phone",
}
USER_UPSERT: dict[str, Any] = {
    "type": "object",
    "description": "One profile to create or update; null clears a field.",
    "required": ["userId"],
    "additionalProperties": False,
    "properties": {
        "userId": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_LENGTH,
            "pattern": NOT_BLANK,
        },
        "email": EMAIL,
        "phone": PHONE,
        "language": formatted("bcp47", "BCP 47 tag"),
        "timezone": formatted("iana-timezone", "IANA zone name"),
        "attributes": ATTRIBUTES,
        "anonymousId": {"description": "accepted and ignored (link ids with /v1/identify)"},
    },
}
_ERASE_VALUE = {"type": "string", "minLength": 1}
# The limit is on the three lists together (more is a 413): no maxItems on each.
ERASE_LIST: dict[str, Any] = {"type": "array", "items": _ERASE_VALUE}
ERASE_REQUEST: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "description": f"who to erase: at least one value, at most {BATCH_LIMIT} in all "
            "(more is a 413)",
            "additionalProperties": False,
            "properties": {"userIds": ERASE_LIST, "emails": ERASE_LIST, "phones": ERASE_LIST},
            "anyOf": [
                {"type": "object", "required": [name], "properties": {name: {"minItems": 1}}}
                for name in ("userIds", "emails", "phones")
            ],
        },
        {
            "type": "array",
            "minItems": 1,
            "maxItems": BATCH_LIMIT,
            "items": {
                "type": "object",
                "description": "exactly one of userId, email, phone",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": False,
                "properties": {
                    "userId": _ERASE_VALUE,
                    "email": _ERASE_VALUE,
                    "phone": _ERASE_VALUE,
                },
            },
        },
    ]
}
COMPONENTS = {"UserUpsert": USER_UPSERT, "EraseRequest": ERASE_REQUEST}
UPSERT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": one_or_batch("UserUpsert", "profiles")}},
}
ERASE_BODY = {"required": True, "content": {"application/json": {"schema": ref("EraseRequest")}}}


class UpsertItemSchema(Schema):
    """Outcome of one item, in request order."""

    index = fields.Int()
    userId = fields.Str(allow_none=True, attribute="user_id")
    ok = fields.Bool()
    created = fields.Bool()
    errors = fields.Dict(allow_none=True)


class UpsertResponseSchema(Schema):
    """Counts and per-item results of an upsert."""

    created = fields.Int()
    updated = fields.Int()
    failed = fields.Int()
    results = fields.List(fields.Nested(UpsertItemSchema))


class UserSchema(Schema):
    """A profile."""

    userId = fields.Str(attribute="external_id", allow_none=True)
    email = fields.Str(allow_none=True)
    phone = fields.Str(allow_none=True)
    language = fields.Str(allow_none=True)
    timezone = fields.Str(allow_none=True)
    attributes = fields.Dict()
    createdAt = fields.DateTime(attribute="created_at")
    updatedAt = fields.DateTime(attribute="updated_at")
    lastSeenAt = fields.DateTime(attribute="last_seen_at", allow_none=True)


class UserDetailSchema(UserSchema):
    """A profile with what hangs off it."""

    anonymousIds = fields.List(fields.Str(), attribute="anonymous_ids")
    audiences = fields.List(fields.Nested(MembershipSchema))
    pushSubscriptions = fields.List(fields.Nested(PushDeviceSchema), attribute="push_subscriptions")


class UserListArgsSchema(PageArgsSchema):
    """A page of profiles, optionally only a segment's members."""

    segment = fields.Str(
        metadata={
            # Checked where it is resolved (a blank one is a 422 like a bad filter).
            "minLength": 1,
            "description": "keep a segment's members: a stored segment's id or name, the string "
            "form (`plan:pro,role:admin`) or JSON text of the object or tree form; an invalid "
            "filter is a 422 naming `segment.<node>`, an unknown segment a 404",
        },
    )


class UserListSchema(Schema):
    """A page of profiles."""

    data = fields.List(fields.Nested(UserSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class EraseResponseSchema(Schema):
    """How many profiles were erased."""

    deleted = fields.Int()
