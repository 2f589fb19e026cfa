"""Schemas of /v1/users."""

from marshmallow import Schema, fields

from app.schemas.audiences import MembershipSchema


class UserUpsertSchema(Schema):
    """One profile to create or update (the body may also be an array of these, ≤1000)."""

    userId = fields.Str(required=True)
    email = fields.Str(allow_none=True)
    phone = fields.Str(allow_none=True, metadata={"description": "normalized to E.164"})
    language = fields.Str(allow_none=True, metadata={"description": "BCP 47 tag"})
    timezone = fields.Str(allow_none=True, metadata={"description": "IANA zone name"})
    attributes = fields.Dict(
        metadata={"description": "merged into the stored ones; null removes a key"}
    )


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


class UserListSchema(Schema):
    """A page of profiles."""

    data = fields.List(fields.Nested(UserSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class EraseRequestSchema(Schema):
    """Who to erase (≤1000 in all); the body may also be an array of {userId|email|phone}."""

    userIds = fields.List(fields.Str())
    emails = fields.List(fields.Str())
    phones = fields.List(fields.Str())


class EraseResponseSchema(Schema):
    """How many profiles were erased."""

    deleted = fields.Int()
