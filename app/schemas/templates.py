"""Schemas of /v1/templates."""

from marshmallow import Schema, fields

CHANNELS_DOC = (
    "{channel: {language: {field: Jinja2 text}}}; channels push (title, body, url, icon, image), "
    "email (subject, html, text), sms (body), inapp (title, body, url, data)"
)


class TemplateInputSchema(Schema):
    """A template to create or replace (PUT); PATCH takes any subset."""

    name = fields.Str(required=True)
    description = fields.Str(allow_none=True)
    default_language = fields.Str(
        data_key="defaultLanguage", metadata={"description": "BCP 47 tag, default en"}
    )
    channels = fields.Dict(required=True, keys=fields.Str(), metadata={"description": CHANNELS_DOC})


class TemplatePatchSchema(Schema):
    """Fields to change; channels merge per channel and language, a null one is removed."""

    name = fields.Str()
    description = fields.Str(allow_none=True)
    default_language = fields.Str(data_key="defaultLanguage")
    channels = fields.Dict(
        keys=fields.Str(),
        metadata={"description": "merged per channel+language; null removes one"},
    )


class TemplateSchema(Schema):
    """A template."""

    id = fields.Int()
    name = fields.Str()
    description = fields.Str(allow_none=True)
    defaultLanguage = fields.Str(attribute="default_language")
    channels = fields.Dict(metadata={"description": CHANNELS_DOC})
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
    language = fields.Str(metadata={"description": "overrides the user's language"})
    channels = fields.List(fields.Str(), metadata={"description": "default: all of them"})
    event = fields.Dict(metadata={"description": "{name, properties} for triggered templates"})


class PreviewSchema(Schema):
    """Rendered channels, and the reason for each channel that failed."""

    data = fields.Dict(metadata={"description": "{channel: {language, field: text...}}"})
    errors = fields.Dict(metadata={"description": "{channel: reason}"})
