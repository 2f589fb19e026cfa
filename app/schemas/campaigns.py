"""Schemas of /v1/campaigns (the Campaign object of API.md) and POST /v1/campaigns/{id}/send.

The shapes and plain values are checked here; what needs the database or the filter language
(templates and audiences by id or name, filters, the kind's own rules, the edit rules of an
active campaign) is `app.services.campaigns`'s, with errors naming the field the same way.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from app.models.campaign import CATEGORIES, KINDS, STATUSES
from app.schemas.common import Integer, PageArgsSchema, name_field, user_id_field, whole
from app.schemas.filters import DURATION, FILTER, WHERE, ref
from app.schemas.messages import TemplateRef
from app.schemas.notify import TOPIC_KEY, URGENCIES
from app.services.campaigns import MAX_HOLDOUT_PERCENT, MAX_RATE_PER_MINUTE, MAX_RECIPIENTS
from app.services.messages import MAX_TTL
from app.services.named import MAX_ID
from journeys.durations import MAX_DURATION
from workers.channels import CHANNELS

FILTER_DOC = {"allOf": [ref(FILTER)], "description": "any form of a segment filter"}
TARGET_ITEM_DOC = {
    "allOf": [ref(FILTER)],
    "description": (
        "any form of a segment filter, a stored segment's id or name, or `{audience: id|name}`"
    ),
}
DURATION_DOC = {
    "anyOf": [
        DURATION,
        {"type": "integer", "minimum": 1, "maximum": int(MAX_DURATION.total_seconds())},
    ],
    "description": f'"90s", "15m", "2h", "3d", "1w" or seconds; at most {MAX_DURATION.days} days',
}
TIMESTAMP_DOC = {"type": "string", "format": "date-time", "description": "ISO 8601; naive = UTC"}


class Duration(fields.Raw):
    """A duration as text (`15m`) or seconds; checked by the service (one set of messages)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError('a duration like "15m", "2h", "3d" or seconds')
        return value


class Timestamp(fields.Str):
    """An ISO 8601 timestamp string; parsed by the service (naive = UTC)."""


class TriggerSchema(Schema):
    """`{event, where?}`: the event that starts a triggered campaign, filtered by properties."""

    event = fields.Str(required=True, validate=validate.Length(min=1, max=255))
    where = fields.Raw(allow_none=True, metadata=WHERE)


class ScheduleSchema(Schema):
    """When a broadcast or recurring campaign sends (its kind checks the combination)."""

    sendAt = Timestamp(allow_none=True, metadata=TIMESTAMP_DOC)
    cron = fields.Str(
        allow_none=True,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "five-field cron expression (recurring)"},
    )
    timezone = fields.Str(
        allow_none=True,
        validate=validate.Length(min=1, max=64),
        metadata={
            "format": "iana-timezone",
            "description": "IANA zone of sendAt's wall clock and of cron",
        },
    )
    deliverIn = fields.Str(
        allow_none=True,
        validate=validate.OneOf(("utc", "userTimezone"), error="utc or userTimezone"),
    )
    missedLocalTime = fields.Str(
        allow_none=True,
        validate=validate.OneOf(("skip", "sendNow"), error="skip or sendNow"),
        metadata={"description": "a local time already past in a zone: skip (default) or sendNow"},
    )


class WindowSchema(Schema):
    """The active window: outside it triggers do nothing and schedules do not fire."""

    startsAt = Timestamp(allow_none=True, metadata=TIMESTAMP_DOC)
    endsAt = Timestamp(allow_none=True, metadata=TIMESTAMP_DOC)


class RateLimitSchema(Schema):
    """How fast the campaign's messages go out."""

    perMinute = Integer(
        required=True,
        validate=validate.Range(min=1, max=MAX_RATE_PER_MINUTE, error=f"1-{MAX_RATE_PER_MINUTE}"),
    )


class GoalSchema(Schema):
    """The conversion event counted after a message (and in the holdout)."""

    event = fields.Str(required=True, validate=validate.Length(min=1, max=255))
    where = fields.Raw(allow_none=True, metadata=WHERE)
    valueField = fields.Str(
        allow_none=True,
        validate=validate.Length(min=1, max=128),
        metadata={"description": "the property holding the revenue"},
    )
    within = Duration(required=True, metadata=DURATION_DOC)


class TargetSchema(Schema):
    """Who may receive it: in any include (none = everyone identified) and in no exclude."""

    include = fields.List(fields.Raw(metadata=TARGET_ITEM_DOC), load_default=list)
    # `exclude` is a Schema attribute: the field is declared under another Python name.
    exclude_ = fields.List(
        fields.Raw(metadata=TARGET_ITEM_DOC),
        load_default=list,
        data_key="exclude",
        attribute="exclude",
    )


TEMPLATE_REF_DOC = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "integer", "minimum": -MAX_ID - 1, "maximum": MAX_ID},
    ],
    "description": "the template's id or name (it must have content for this channel)",
}


class Channels(fields.Raw):
    """`{channel: template id or name}`; unknown channels are the service's 422 naming them
    (`channels.fax`), as are unknown templates."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise ValidationError("an object of channel: template id or name")
        ref = TemplateRef()
        out: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for channel, template in value.items():
            try:
                out[channel] = ref.deserialize(template)
            except ValidationError as err:
                errors[channel] = err.messages  # type: ignore[assignment]
        if errors:
            raise ValidationError(errors)  # type: ignore[arg-type]
        return out


def _channels_field(**kwargs: Any) -> Channels:
    return Channels(
        metadata={
            "type": "object",
            "properties": {channel: TEMPLATE_REF_DOC for channel in CHANNELS},
            "additionalProperties": False,
            "minProperties": 1,
            "description": "channel: template id or name (with content for that channel)",
        },
        **kwargs,
    )


class CampaignInputSchema(Schema):
    """A campaign to create (PATCH takes any subset: `CampaignPatchSchema`)."""

    name = name_field(required=True)
    kind = fields.Str(
        required=True, validate=validate.OneOf(KINDS, error=f"one of {', '.join(KINDS)}")
    )
    channels = _channels_field(required=True)
    target = fields.Nested(TargetSchema, allow_none=True)
    trigger = fields.Nested(TriggerSchema, allow_none=True)
    schedule = fields.Nested(ScheduleSchema, allow_none=True)
    window = fields.Nested(WindowSchema, allow_none=True)
    ttlSeconds = Integer(
        allow_none=True, validate=validate.Range(min=1, max=MAX_TTL, error=f"1-{MAX_TTL}")
    )
    urgency = fields.Str(
        allow_none=True, validate=validate.OneOf(URGENCIES, error="very-low, low, normal or high")
    )
    category = fields.Str(
        validate=validate.OneOf(CATEGORIES, error="marketing or transactional"),
        metadata={"description": "marketing (default) or transactional"},
    )
    topic = fields.Str(
        allow_none=True,
        validate=validate.Regexp(whole(TOPIC_KEY), error="a topic key of settings.topics"),
    )
    rateLimit = fields.Nested(RateLimitSchema, allow_none=True)
    goal = fields.Nested(GoalSchema, allow_none=True)
    holdoutPercent = Integer(
        allow_none=True,
        validate=validate.Range(min=0, max=MAX_HOLDOUT_PERCENT, error=f"0-{MAX_HOLDOUT_PERCENT}"),
    )


class CampaignPatchSchema(CampaignInputSchema):
    """Fields to change (see the edit rules in `app.services.campaigns`)."""

    name = name_field()
    kind = fields.Str(metadata={"description": "never changes: only the current kind is taken"})
    channels = _channels_field()


class CampaignSchema(Schema):
    """A stored campaign: the Campaign object with its state."""

    id = fields.Int()
    name = fields.Str()
    kind = fields.Str()
    status = fields.Str(metadata={"enum": list(STATUSES)})
    statusReason = fields.Str(attribute="status_reason", allow_none=True)
    channels = fields.Dict(keys=fields.Str(), values=fields.Int())
    target = fields.Dict(allow_none=True)
    trigger = fields.Dict(allow_none=True)
    schedule = fields.Dict(allow_none=True)
    window = fields.Method("_window", allow_none=True)
    ttlSeconds = fields.Int(attribute="ttl_seconds", allow_none=True)
    urgency = fields.Str(allow_none=True)
    category = fields.Str()
    topic = fields.Str(allow_none=True)
    rateLimit = fields.Method("_rate", allow_none=True)
    goal = fields.Dict(allow_none=True)
    holdoutPercent = fields.Int(attribute="holdout_percent")
    version = fields.Int()
    createdAt = fields.DateTime(attribute="created_at")
    updatedAt = fields.DateTime(attribute="updated_at")
    activatedAt = fields.DateTime(attribute="activated_at", allow_none=True)
    completedAt = fields.DateTime(attribute="completed_at", allow_none=True)
    warnings = fields.List(
        fields.Str(),
        metadata={"description": "activate and resume only: what the kind warns about"},
    )

    def _window(self, campaign: Any) -> dict[str, Any] | None:
        if campaign.starts_at is None and campaign.ends_at is None:
            return None
        return {
            "startsAt": campaign.starts_at.isoformat() if campaign.starts_at else None,
            "endsAt": campaign.ends_at.isoformat() if campaign.ends_at else None,
        }

    def _rate(self, campaign: Any) -> dict[str, Any] | None:
        if campaign.rate_per_minute is None:
            return None
        return {"perMinute": campaign.rate_per_minute}


class CampaignListSchema(Schema):
    """A page of campaigns."""

    data = fields.List(fields.Nested(CampaignSchema))
    nextCursor = fields.Str(allow_none=True, attribute="next_cursor")


class CampaignListArgsSchema(PageArgsSchema):
    """`?status=`, `?kind=` besides the page."""

    status = fields.Str(validate=validate.OneOf(STATUSES))
    kind = fields.Str(validate=validate.OneOf(KINDS))


class RecipientSchema(Schema):
    """One recipient: exactly one of userId, email, phone; `params` reach the template."""

    userId = user_id_field(allow_none=True)
    email = fields.Str(allow_none=True, validate=validate.Length(min=1, max=320))
    phone = fields.Str(allow_none=True, validate=validate.Length(min=1, max=64))
    params = fields.Dict(
        allow_none=True, metadata={"description": "template variables: {{ params.x }}"}
    )


class CampaignSendSchema(Schema):
    """`POST /v1/campaigns/{id}/send`: up to 1000 recipients (more is a 413)."""

    # Items are checked one by one (RecipientSchema): a bad one is answered in its place.
    recipients = fields.List(
        fields.Dict(metadata={"description": "{userId | email | phone, params?}"}),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": f"1-{MAX_RECIPIENTS} recipients; more is a 413"},
    )


class RecipientResultSchema(Schema):
    """One recipient's outcome, in request order."""

    ok = fields.Bool()
    userId = fields.Str()
    email = fields.Str()
    phone = fields.Str()
    messageIds = fields.List(fields.Int())
    skipped = fields.Dict(
        keys=fields.Str(),
        values=fields.Str(),
        metadata={"description": "channel: why it was not sent there (holdout, no_address...)"},
    )
    collapsed = fields.Int(
        metadata={"description": "messages that an earlier recipient of this request already got"}
    )
    error = fields.Str()
    errors = fields.Dict()


class CampaignSendResultSchema(Schema):
    """What a send request did."""

    sendIds = fields.List(fields.Int())
    messages = fields.Int(metadata={"description": "messages created"})
    collapsed = fields.Int(metadata={"description": "duplicate recipients' messages not created"})
    results = fields.List(fields.Nested(RecipientResultSchema))
