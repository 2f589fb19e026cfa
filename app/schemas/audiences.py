"""Schemas of /v1/audiences."""

from marshmallow import Schema, fields, validate

from app.schemas.common import Integer, name_field, user_id_field
from app.services.audiences import (
    MAX_DESCRIPTION_LENGTH as MAX_DESCRIPTION,
)
from app.services.audiences import (
    MAX_MEMBERS_PER_CALL,
    MAX_TTL_SECONDS,
)


def USER_IDS() -> fields.List:
    """1-1000 userIds (a longer list is a 413)."""
    return fields.List(
        user_id_field(),
        required=True,
        validate=validate.Length(min=1),
        # More than MAX_MEMBERS_PER_CALL is a 413 (API.md), so no maxItems that would be a 422.
        metadata={"description": f"1-{MAX_MEMBERS_PER_CALL} userIds; more is a 413"},
    )


class AudienceInputSchema(Schema):
    """An audience to create or replace (PUT); PATCH takes any subset."""

    name = name_field(required=True)
    description = fields.Str(allow_none=True, validate=validate.Length(max=MAX_DESCRIPTION))


class AudiencePatchSchema(Schema):
    """Fields to change."""

    name = name_field()
    description = fields.Str(allow_none=True, validate=validate.Length(max=MAX_DESCRIPTION))


class AudienceSchema(Schema):
    """An audience and how many current members it has."""

    id = fields.Int()
    name = name_field()
    description = fields.Str(allow_none=True, validate=validate.Length(max=MAX_DESCRIPTION))
    memberCount = fields.Int(
        attribute="member_count", metadata={"description": "current members (TTL not passed)"}
    )
    createdAt = fields.DateTime(attribute="created_at")


class AudienceListSchema(Schema):
    """A page of audiences."""

    data = fields.List(fields.Nested(AudienceSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class MembersAddSchema(Schema):
    """Users to add, by userId; unknown userIds are created (first sight)."""

    userIds = USER_IDS()
    ttlSeconds = Integer(
        allow_none=True,
        validate=validate.Range(1, MAX_TTL_SECONDS),
        metadata={"description": "membership ends this long after the call; none = no end"},
    )


class MembersRemoveSchema(Schema):
    """Users to remove, by userId."""

    userIds = USER_IDS()


class MemberResultSchema(Schema):
    """The outcome for one userId, in request order (duplicates reported once)."""

    userId = fields.Str(attribute="user_id")
    created = fields.Bool(metadata={"description": "the profile did not exist and was created"})
    joined = fields.Bool(metadata={"description": "false: already a member, TTL refreshed"})
    expiresAt = fields.DateTime(attribute="expires_at", allow_none=True)


class MembersAddedSchema(Schema):
    """What an add did."""

    joined = fields.Int(metadata={"description": "users who were not current members"})
    refreshed = fields.Int(metadata={"description": "current members whose TTL was renewed"})
    created = fields.Int(metadata={"description": "profiles created on first sight"})
    results = fields.List(fields.Nested(MemberResultSchema))


class RemovedResultSchema(Schema):
    """The outcome for one userId of a removal."""

    userId = fields.Str(attribute="user_id")
    removed = fields.Bool(metadata={"description": "false: unknown user or not a member"})


class MembersRemovedSchema(Schema):
    """What a removal did."""

    removed = fields.Int()
    results = fields.List(fields.Nested(RemovedResultSchema))


class MemberSchema(Schema):
    """A current member."""

    userId = fields.Str(attribute="user_id", allow_none=True)
    joinedAt = fields.DateTime(attribute="joined_at")
    expiresAt = fields.DateTime(attribute="expires_at", allow_none=True)


class MemberListSchema(Schema):
    """A page of current members, in user row order."""

    data = fields.List(fields.Nested(MemberSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class MembershipSchema(Schema):
    """One of a user's current audiences (`app.services.audiences.audiences_of`)."""

    id = fields.Int()
    name = fields.Str()
    joinedAt = fields.DateTime(attribute="joined_at")
    expiresAt = fields.DateTime(attribute="expires_at", allow_none=True)
