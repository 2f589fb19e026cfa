"""Schemas of /v1/templates.

`channels` is documented as the JSON Schema of `{channel: {language: {field: Jinja2 text}}}`,
generated from the channel specs the validator uses (`app.rendering.CHANNELS`). What JSON
Schema cannot say is in the descriptions: every text must compile as Jinja2 (`format:
jinja2`), and `defaultLanguage` must be one of the languages given.
"""

from typing import Any

from marshmallow import Schema, fields, validate

from app.rendering import CHANNELS
from app.schemas.common import name_field
from app.services.templates import MAX_DESCRIPTION_LENGTH as MAX_DESCRIPTION
from app.services.templates import MAX_SOURCE_CHARS
from journeys.text import VISIBLE_PATTERN

LANGUAGE = {"type": "string", "format": "bcp47", "maxLength": 35}
SOURCE = {"type": "string", "format": "jinja2", "maxLength": MAX_SOURCE_CHARS}
# Values of object fields (in-app `data`): texts at any depth are templates too.
DATA_VALUE = "TemplateDataValue"
DATA_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        SOURCE,
        {"type": ["number", "boolean", "null"]},
        {"type": "array", "items": {"$ref": f"#/components/schemas/{DATA_VALUE}"}},
        {"type": "object", "additionalProperties": {"$ref": f"#/components/schemas/{DATA_VALUE}"}},
    ]
}


def _content_schema(channel: str) -> dict[str, Any]:
    spec = CHANNELS[channel]
    properties = {
        name: (
            {
                "type": "object",
                "additionalProperties": {"$ref": f"#/components/schemas/{DATA_VALUE}"},
            }
            if name in spec.object_fields
            else SOURCE
        )
        for name in spec.fields
    }
    # Each required group needs one of its fields holding a non-blank text. A group of one is
    # `required` plus a pattern; a group of several an anyOf (kept out of allOf: generators
    # multiply allOf-of-anyOf out into examples too large to start from).
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [group[0] for group in spec.required if len(group) == 1]
    for name in required:
        properties[name] = {**properties[name], "pattern": VISIBLE_PATTERN}
    if required:
        schema["required"] = required
    choices = [
        {
            "anyOf": [
                {
                    "type": "object",
                    "required": [name],
                    "properties": {name: {**SOURCE, "pattern": VISIBLE_PATTERN}},
                }
                for name in group
            ]
        }
        for group in spec.required
        if len(group) > 1
    ]
    if len(choices) == 1:
        schema.update(choices[0])
    elif choices:
        schema["allOf"] = choices
    return {
        **schema,
        "additionalProperties": False,
        "description": f"{channel}: {', '.join(spec.fields)}",
    }


def channels_schema(*, patch: bool) -> dict[str, Any]:
    """The documented shape of `channels` (a PATCH may set a channel or a language to null)."""

    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [schema, {"type": "null"}]} if patch else schema

    return {
        "type": "object",
        "minProperties": 0 if patch else 1,
        "additionalProperties": False,
        "properties": {
            channel: nullable(
                {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": LANGUAGE,
                    "additionalProperties": nullable(_content_schema(channel)),
                }
            )
            for channel in CHANNELS
        },
        "description": "{channel: {language: {field: Jinja2 text}}}",
    }


def _channels_field(*, patch: bool, **kwargs: Any) -> fields.Dict:
    return fields.Dict(metadata=channels_schema(patch=patch), **kwargs)


DEFAULT_LANGUAGE_DOC = "BCP 47 tag (default en); a language some channel has content in"


class TemplateInputSchema(Schema):
    """A template to create or replace (PUT); PATCH takes any subset."""

    name = name_field(required=True)
    description = fields.Str(allow_none=True, validate=validate.Length(max=MAX_DESCRIPTION))
    default_language = fields.Str(
        data_key="defaultLanguage", metadata={**LANGUAGE, "description": DEFAULT_LANGUAGE_DOC}
    )
    channels = _channels_field(patch=False, required=True)


class TemplatePatchSchema(Schema):
    """Fields to change; channels merge per channel and language, a null one is removed."""

    name = name_field()
    description = fields.Str(allow_none=True, validate=validate.Length(max=MAX_DESCRIPTION))
    default_language = fields.Str(
        data_key="defaultLanguage", metadata={**LANGUAGE, "description": DEFAULT_LANGUAGE_DOC}
    )
    channels = _channels_field(patch=True)


class TemplateSchema(Schema):
    """A template."""

    id = fields.Int()
    name = fields.Str()
    description = fields.Str(allow_none=True)
    defaultLanguage = fields.Str(attribute="default_language")
    channels = fields.Dict(metadata={"description": "{channel: {language: {field: text}}}"})
    createdAt = fields.DateTime(attribute="created_at")
    updatedAt = fields.DateTime(attribute="updated_at")


class TemplateListSchema(Schema):
    """A page of templates."""

    data = fields.List(fields.Nested(TemplateSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class PreviewRequestSchema(Schema):
    """Who and what to render the template for."""

    user_id = fields.Str(data_key="userId", metadata={"description": "a stored profile"})
    params = fields.Dict(metadata={"description": "also available as `data`"})
    language = fields.Str(metadata={**LANGUAGE, "description": "overrides the user's language"})
    channels = fields.List(
        fields.Str(validate=validate.OneOf(list(CHANNELS))),
        metadata={"description": "default: all of them"},
    )
    event = fields.Dict(metadata={"description": "{name, properties} for triggered templates"})


class PreviewSchema(Schema):
    """Rendered channels, and the reason for each channel that failed."""

    data = fields.Dict(metadata={"description": "{channel: {language, field: text...}}"})
    errors = fields.Dict(metadata={"description": "{channel: reason}"})
