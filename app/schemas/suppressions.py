"""Schemas of /v1/suppressions."""

from typing import Any

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


# The addresses of a channel that the channel checks (`normalize_address`), by format.
ADDRESS_FORMATS = {"email": "email-address", "sms": "phone-number"}


def suppression_body(schema: type[Schema]) -> dict[str, Any]:
    """The body of an add or a removal: what `address` holds depends on `channel`."""
    by_channel: list[dict[str, Any]] = [
        {
            "properties": {
                "channel": {"const": channel},
                "address": {"type": "string", "format": fmt},
            }
        }
        for channel, fmt in ADDRESS_FORMATS.items()
    ]
    others = [channel for channel in CHANNELS if channel not in ADDRESS_FORMATS]
    if others:
        by_channel.append(
            {"properties": {"channel": {"enum": others}}, "description": "any address text"}
        )
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [schema, {"oneOf": by_channel}],
                    "description": "an invalid email or phone number is a 422 naming address",
                }
            }
        },
    }


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
