"""Schemas of /v1/project: the calling project's name, phone region and delivery settings."""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from app.schemas.common import Integer, whole
from app.services.identity import MODES as IDENTITY_MODES
from app.services.profiles import FieldError, normalize_timezone
from journeys.text import LEADING_BLANKS_THEN_VISIBLE
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


def _vapid_subject(value: str) -> None:
    from app.services.vapid import subject_problem

    problem = subject_problem(value)
    if problem is not None:
        raise ValidationError(problem)


class EmailSettingsSchema(Schema):
    """The project's sender: overrides SMTP_FROM."""

    fromAddress = fields.Email(
        data_key="from", attribute="from", metadata={"description": "the sender address"}
    )
    fromName = fields.Str(validate=validate.Length(max=200))
    replyTo = fields.Email()
    unsubscribeMailto = fields.Email(
        metadata={"description": "List-Unsubscribe mailto next to the https link"}
    )


class SmsSettingsSchema(Schema):
    """The project's SMS sender and the answer to HELP."""

    fromNumber = fields.Str(
        data_key="from",
        attribute="from",
        validate=validate.Length(max=32),
        metadata={"description": "E.164"},
    )
    helpText = fields.Str(
        validate=validate.Length(min=1, max=320),
        metadata={"description": "answered to an inbound HELP"},
    )


class PushSettingsSchema(Schema):
    """The VAPID contact push services see; overrides VAPID_SUBJECT."""

    vapidSubject = fields.Str(
        validate=_vapid_subject,
        metadata={
            "format": "vapid-subject",
            "description": "a real mailto: or https: contact (no example.com, no localhost)",
        },
    )


class TopicSchema(Schema):
    """A subscription group on every channel, mapped to the audience `topic:<key>`."""

    key = fields.Str(
        required=True,
        validate=validate.Regexp(whole(r"[a-z0-9][a-z0-9_-]{0,63}"), error="a-z, 0-9, _ or -"),
    )
    name = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    description = fields.Str(validate=validate.Length(max=1000))
    # Opt-out topics reach everyone who has not left; opt-in ones only those who joined.
    default = fields.Bool(
        load_default=False, metadata={"description": "subscribed until the person leaves"}
    )


def _unique_topics(value: list[dict[str, str]]) -> None:
    keys = [t["key"] for t in value]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValidationError(f"topic key {duplicates[0]!r} appears twice")


MIN_RATE, MAX_RATE = 0.001, 100_000


def _rate_limits(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("an object: {provider: messages per second}")
    unknown = sorted(set(value) - set(PROVIDERS))
    if unknown:
        raise ValidationError(f"unknown provider {unknown[0]!r}; known: {', '.join(PROVIDERS)}")
    for name, rate in value.items():
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not MIN_RATE <= rate <= MAX_RATE
        ):
            raise ValidationError(f"{name}: messages per second, {MIN_RATE}-{MAX_RATE}")


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
    email = fields.Nested(EmailSettingsSchema, allow_none=True)
    sms = fields.Nested(SmsSettingsSchema, allow_none=True)
    push = fields.Nested(PushSettingsSchema, allow_none=True)
    topics = fields.List(
        fields.Nested(TopicSchema),
        allow_none=True,
        validate=[validate.Length(max=100), _unique_topics],
        metadata={"description": "subscription groups offered on every channel"},
    )
    rateLimits = fields.Raw(
        allow_none=True,
        validate=_rate_limits,
        metadata={
            # apispec drops propertyNames from a Dict's metadata: the whole schema is spelled out.
            "anyOf": [
                {
                    "type": "object",
                    "propertyNames": {"enum": sorted(PROVIDERS)},
                    "additionalProperties": {
                        "type": "number",
                        "minimum": MIN_RATE,
                        "maximum": MAX_RATE,
                    },
                },
                {"type": "null"},
            ],
            "description": "{provider: messages per second}; overrides RATE_LIMITS",
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
        validate=[
            validate.Length(max=200),
            validate.Regexp(LEADING_BLANKS_THEN_VISIBLE, error="non-empty"),
        ]
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
