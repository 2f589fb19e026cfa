"""Schemas of /v1/suppressions."""

from marshmallow import Schema, fields, validate

from workers.channels import CHANNELS

CHANNEL = fields.Str(required=True, validate=validate.OneOf(list(CHANNELS)))
ADDRESS_DOC = "an email address, a phone number (E.164 or in the project's region), or user:<id>"


class SuppressionRemoveSchema(Schema):
    """Which address to lift the suppression of."""

    channel = CHANNEL
    address = fields.Str(
        required=True, validate=validate.Length(1, 2048), metadata={"description": ADDRESS_DOC}
    )


class SuppressionInputSchema(SuppressionRemoveSchema):
    """An address to suppress; adding it twice is harmless."""

    reason = fields.Str(load_default="manual", validate=validate.Length(max=40))


class SuppressionSchema(Schema):
    """One suppressed address."""

    channel = fields.Str(required=True)
    address = fields.Str(required=True)
    reason = fields.Str(required=True)
    createdAt = fields.DateTime(required=True, attribute="created_at")


class SuppressionListSchema(Schema):
    """A page of suppressions."""

    data = fields.List(fields.Nested(SuppressionSchema), required=True)
    nextCursor = fields.Str(required=True, allow_none=True, attribute="next_cursor")


class AddedSchema(Schema):
    """What an add did."""

    added = fields.Int(required=True)


class RemovedSchema(Schema):
    """What a removal did."""

    removed = fields.Int(required=True)
