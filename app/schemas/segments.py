"""Schemas of /v1/segments."""

from marshmallow import Schema, fields

from app.schemas.common import name_field
from app.schemas.filters import FILTER, ref
from app.schemas.users import UserSchema
from journeys.filters import parse_filter, to_string_form

FILTER_DOC = {"allOf": [ref(FILTER)], "description": "any form of a segment filter"}


def SEGMENT_NAME(**kwargs):
    """`?segment=` reads text with ':' as a string-form filter and `{`/`[` as JSON."""
    return name_field(forbidden="/:", not_first="{[", **kwargs)


class SegmentInputSchema(Schema):
    """A segment to create or replace (PUT); PATCH takes any subset."""

    name = SEGMENT_NAME(required=True)
    filter = fields.Raw(required=True, metadata=FILTER_DOC)


class SegmentPatchSchema(Schema):
    """Fields to change."""

    name = SEGMENT_NAME()
    filter = fields.Raw(metadata=FILTER_DOC)


class SegmentSchema(Schema):
    """A segment: its filter as the normalized tree, and the string form when it has one."""

    id = fields.Int()
    name = fields.Str()
    filter = fields.Dict(metadata={"description": "the normalized condition tree"})
    stringForm = fields.Function(
        lambda segment: to_string_form(parse_filter(segment.filter)),
        allow_none=True,
        metadata={"description": "null when the tree has no string form"},
    )
    createdAt = fields.DateTime(attribute="created_at")
    updatedAt = fields.DateTime(attribute="updated_at")


class SegmentListSchema(Schema):
    """A page of segments."""

    data = fields.List(fields.Nested(SegmentSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class SegmentUsersSchema(Schema):
    """A page of a segment's members, in user row order."""

    data = fields.List(fields.Nested(UserSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class SegmentPreviewRequestSchema(Schema):
    """A filter to try without storing it."""

    filter = fields.Raw(required=True, metadata=FILTER_DOC)


class SegmentPreviewSchema(Schema):
    """How many users match now, and a few of their userIds."""

    count = fields.Int()
    sample = fields.List(fields.Str(), metadata={"description": "at most 10 userIds"})
