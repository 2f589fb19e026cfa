"""Schemas of /v1/project: the calling project's name, phone region and delivery settings."""

from marshmallow import Schema, ValidationError, fields, validate

from app.schemas.common import Integer, whole
from app.services.identity import MODES as IDENTITY_MODES
from app.services.profiles import FieldError, normalize_timezone
from workers.channels import CHANNELS
from workers.channels.providers import PROVIDERS, provider_problem

HHMM = whole(r"([01][0-9]|2[0-3]):[0-5][0-9]")
MAX_STACK_WINDOW = 86400


def _time_zone(value: str) -> None:
    try:
        normalize_timezone(value)
    except FieldError as err:
        raise ValidationError(str(err)) from None


def _providers(value: dict[str, str]) -> None:
    problems = [
        f"{channel}: {problem}"
        for channel, name in value.items()
        if (problem := provider_problem(channel, name)) is not None
    ]
    if problems:
        raise ValidationError(problems)


def providers_by_channel() -> dict[str, list[str]]:
    """Which registered providers can serve each channel (for the document)."""
    return {
        channel: [name for name in sorted(PROVIDERS) if provider_problem(channel, name) is None]
        for channel in CHANNELS
    }


class QuietHoursSchema(Schema):
    """No marketing sends between `start` and `end` (HH:MM, the user's zone or `timezone`)."""

    start = fields.Str(required=True, validate=validate.Regexp(HHMM, error="HH:MM"))
    end = fields.Str(required=True, validate=validate.Regexp(HHMM, error="HH:MM"))
    mode = fields.Str(
        load_default="defer",
        validate=validate.OneOf(["defer", "drop"]),
        metadata={"description": "defer to the end of the window, or drop"},
    )
    timezone = fields.Str(
        validate=_time_zone,
        metadata={"format": "iana-timezone", "description": "for users without a time zone"},
    )


class FrequencyCapSchema(Schema):
    """At most `count` marketing messages per user in `windowSeconds`."""

    count = Integer(required=True, validate=validate.Range(min=1, max=10**6))
    windowSeconds = Integer(required=True, validate=validate.Range(min=1, max=366 * 86400))


class SettingsSchema(Schema):
    """Delivery settings; in a PATCH each one given replaces the stored one, null removes it."""

    quietHours = fields.Nested(QuietHoursSchema, allow_none=True)
    frequencyCap = fields.Nested(FrequencyCapSchema, allow_none=True)
    stackWindowSeconds = Integer(
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_STACK_WINDOW),
        metadata={"description": "how long an incrementId stacks (default 600)"},
    )
    providers = fields.Dict(
        allow_none=True,
        validate=_providers,
        metadata={
            "description": "{channel: provider} for this project; overrides EMAIL_PROVIDER etc.",
            "properties": {
                # No provider yet (push): nothing is valid there.
                channel: {"enum": names} if names else {"not": {}}
                for channel, names in providers_by_channel().items()
            },
            "additionalProperties": False,
        },
    )
    identityVerification = fields.Str(
        allow_none=True,
        validate=validate.OneOf(list(IDENTITY_MODES)),
        metadata={
            "description": "required: publishable-key calls naming a userId need its userHash"
        },
    )


class ProjectPatchSchema(Schema):
    """What a PATCH may change."""

    name = fields.Str(
        validate=[validate.Length(max=200), validate.Regexp(r"^\s*\S", error="non-empty")]
    )
    defaultRegion = fields.Str(
        allow_none=True,
        validate=validate.Regexp(whole("[A-Za-z]{2}"), error="ISO 3166 alpha-2, e.g. US or KR"),
        metadata={"description": "region for phone numbers written without +country code"},
    )
    settings = fields.Nested(SettingsSchema)


class ProjectSchema(Schema):
    """The project as the API shows it (secrets excluded)."""

    id = fields.Int(required=True)
    name = fields.Str(required=True)
    defaultRegion = fields.Str(required=True, allow_none=True)
    settings = fields.Dict(required=True, metadata={"description": "see the PATCH body"})
