"""Schemas of /v1/campaigns/{id}/simulate and /v1/campaigns/{id}/stats."""

from marshmallow import Schema, fields

from app.services.simulate import MAX_USERS


def _counts(description: str) -> fields.Dict:
    return fields.Dict(
        keys=fields.Str(), values=fields.Int(), required=True, metadata={"description": description}
    )


class ScheduleSlotSchema(Schema):
    """How many messages go out in one UTC hour."""

    at = fields.DateTime(required=True, metadata={"description": "the hour's start (UTC)"})
    count = fields.Int(required=True)


class SimulationSchema(Schema):
    """What activating the campaign now would do (nothing is written)."""

    reached = fields.Int(required=True, metadata={"description": "users getting a message"})
    messages = fields.Int(required=True, metadata={"description": "messages (one per address)"})
    byChannel = _counts("messages per channel")
    skipped = _counts(
        "by reason: not_in_target, outside_window, holdout, missed_local_time (users); "
        "no_address (user x channel); opted_out, capped, quiet_hours, expired, deduplicated "
        "(messages)"
    )
    deferred = _counts("messages reached but delayed (quiet_hours in defer mode), by reason")
    schedule = fields.List(
        fields.Nested(ScheduleSlotSchema),
        required=True,
        metadata={"description": "broadcast and recurring: messages per UTC hour"},
    )
    at = fields.DateTime(required=True, metadata={"description": "the send instant simulated"})
    evaluated = fields.Int(required=True, metadata={"description": "target users evaluated"})
    truncated = fields.Bool(
        required=True,
        metadata={
            "description": f"the target has more than {MAX_USERS} users: counts cover the "
            "first ones by id"
        },
    )


class HoldoutStatsSchema(Schema):
    """The holdout slice next to the messaged users."""

    size = fields.Int(required=True)
    converted = fields.Int(required=True)
    convertedUsers = fields.Int(required=True)
    revenue = fields.Float(required=True)
    conversionRate = fields.Float(allow_none=True, required=True)
    lift = fields.Float(
        allow_none=True,
        required=True,
        metadata={"description": "(messaged rate - holdout rate) / holdout rate; null if no base"},
    )


class CampaignStatsSchema(Schema):
    """A campaign's results over all its sends."""

    campaignId = fields.Int(required=True)
    sent = fields.Int(required=True, metadata={"description": "sent, delivered, opened or clicked"})
    delivered = fields.Int(required=True, metadata={"description": "delivered, opened or clicked"})
    opened = fields.Int(required=True, metadata={"description": "opened or clicked"})
    clicked = fields.Int(required=True)
    queued = fields.Int(required=True)
    sending = fields.Int(required=True)
    failed = fields.Int(required=True)
    expired = fields.Int(required=True)
    suppressed = fields.Int(required=True)
    deduplicated = fields.Int(required=True)
    cancelled = fields.Int(required=True)
    statuses = _counts("messages by current status")
    byChannel = fields.Dict(
        keys=fields.Str(),
        values=fields.Dict(keys=fields.Str(), values=fields.Int()),
        required=True,
        metadata={"description": "per channel, messages by current status"},
    )
    messages = fields.Int(required=True)
    messagedUsers = fields.Int(required=True)
    converted = fields.Int(required=True, metadata={"description": "conversions after a message"})
    convertedUsers = fields.Int(required=True)
    revenue = fields.Float(required=True)
    conversionRate = fields.Float(allow_none=True, required=True)
    holdout = fields.Nested(HoldoutStatsSchema, required=True)
    skipped = _counts("users or messages that got nothing, by reason")
