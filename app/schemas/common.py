"""Schemas shared by several endpoints."""

from marshmallow import Schema, fields


class ErrorSchema(Schema):
    """The one error shape of the API."""

    code = fields.Int(required=True)
    status = fields.Str(required=True)
    message = fields.Str(required=True)
    errors = fields.Dict()
