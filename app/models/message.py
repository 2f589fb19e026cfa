"""The outbox: send requests, one message row per (recipient address, channel), its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow

# Stored strings: never rename.
STATUSES = (
    "queued",
    "sending",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "failed",
    "expired",
    "suppressed",
    "deduplicated",
    "cancelled",
)
# Statuses after which nothing more is attempted.
FINAL = frozenset(
    {
        "sent",
        "delivered",
        "opened",
        "clicked",
        "failed",
        "expired",
        "suppressed",
        "deduplicated",
        "cancelled",
    }
)
REACHED = ("sent", "delivered", "opened", "clicked")
# Channel names (messages.channel) are the keys of the registry in workers/channels.


class Send(Base):
    """A send request (notify, messages, sms, campaign run): content and targeting, once."""

    __tablename__ = "sends"
    # A client message id (`POST /v1/messages` `id`) is applied once per project: `id/exists`.
    __table_args__ = (
        UniqueConstraint("project_id", "client_id"),
        Index("ix_sends_campaign", "campaign_id", "id"),
        Index("ix_sends_idempotency_key", "project_id", "idempotency_key"),
        Index("ix_sends_journey_run", "journey_run_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # notify, message, sms, campaign
    client_id: Mapped[str | None] = mapped_column(String(255), default=None)
    campaign_id: Mapped[int | None] = mapped_column(BigId, default=None)
    # The campaign run (a broadcast or cron occurrence, one zone's slot) this send is.
    run_id: Mapped[int | None] = mapped_column(BigId, default=None)
    # A journey's send step: the run and the step (the dedup key holds the visit too).
    journey_run_id: Mapped[int | None] = mapped_column(BigId, default=None)
    journey_step: Mapped[str | None] = mapped_column(String(64), default=None)
    # Messages' dedup key; None = "send:<id>". A campaign uses one key per occurrence, so a
    # resumed or re-fired run never reaches an address it already reached.
    dedup_key: Mapped[str | None] = mapped_column(String(100), default=None)
    # The `Idempotency-Key` the request carried: pending messages can be cancelled by it.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    # A campaign's `rateLimit.perMinute`: its messages are spread to this rate.
    rate_per_minute: Mapped[int | None] = mapped_column(default=None)
    # Recipients skipped before any message row existed, by reason ({"holdout": 3, ...}).
    skipped: Mapped[dict[str, int] | None] = mapped_column(JSONType, default=None)
    template_id: Mapped[int | None] = mapped_column(BigId, default=None)
    # Targeting for fan-out: {"segment": <tree>} or {"broadcast": true}; None for direct sends.
    target: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    channels: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Direct content ({title, body, url, data}) or template params, rendered per recipient.
    content: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    transactional: Mapped[bool] = mapped_column(default=False)
    ttl_seconds: Mapped[int | None] = mapped_column(default=None)
    # The topic (subscription group) a marketing send belongs to: people who left it are skipped.
    topic: Mapped[str | None] = mapped_column(String(64), default=None)
    # Push: `high`, `normal` (default), `low`, `very-low` (RFC 8030 Urgency).
    urgency: Mapped[str | None] = mapped_column(String(10), default=None)
    # pending → fanning_out → done; fan-out resumes after `cursor` (last user row id done).
    status: Mapped[str] = mapped_column(String(20), default="done")
    cursor: Mapped[int] = mapped_column(BigId, default=0)
    recipients: Mapped[int] = mapped_column(default=0)
    deduplicated: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Message(Base):
    """One message to one address on one channel; a row before it is a job."""

    __tablename__ = "messages"
    __table_args__ = (
        # The same send or campaign never reaches the same address twice on a channel.
        UniqueConstraint("project_id", "dedup_key", "channel", "address"),
        Index(
            "ix_messages_due",
            "status",
            "not_before",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        Index("ix_messages_user_sent", "user_id", "sent_at"),
        Index("ix_messages_send", "send_id", "status"),
        Index("ix_messages_project_created", "project_id", "id"),
        # Provider callbacks (Twilio status) find their message by the provider's id.
        Index("ix_messages_provider_id", "provider", "provider_id"),
        # Partial: most messages have no incrementId, and bulk fan-out should not pay for it.
        Index(
            "ix_messages_increment",
            "project_id",
            "user_id",
            "channel",
            "increment_id",
            postgresql_where=text("increment_id IS NOT NULL"),
            sqlite_where=text("increment_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    send_id: Mapped[int | None] = mapped_column(
        ForeignKey("sends.id", ondelete="CASCADE"), default=None
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
    channel: Mapped[str] = mapped_column(String(10))
    # Email address, E.164 number, push subscription id, or `user:<id>` for in-app.
    address: Mapped[str] = mapped_column(String(2048))
    dedup_key: Mapped[str | None] = mapped_column(String(100), default=None)
    increment_id: Mapped[str | None] = mapped_column(String(255), default=None)
    increment_count: Mapped[int] = mapped_column(default=1)
    # The earlier message of the same increment group this one replaces on the device.
    replaces_id: Mapped[int | None] = mapped_column(BigId, default=None)
    # Per-message content or params; None means the send's content.
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    overrides: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    transactional: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    provider: Mapped[str | None] = mapped_column(String(40), default=None)
    provider_id: Mapped[str | None] = mapped_column(String(255), default=None)
    # SMS: how many segments the body takes (GSM-7 or UCS-2), as carriers bill it.
    segments: Mapped[int | None] = mapped_column(default=None)
    # What was actually sent (after rendering), shown in the inbox and the message log.
    rendered: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageStatusChange(Base):
    """A message's timestamped status history, with the reason for every non-send."""

    __tablename__ = "message_status_changes"
    __table_args__ = (Index("ix_message_status_changes_message", "message_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Suppression(Base):
    """An address that must not be sent to on a channel (unsubscribe, bounce, manual)."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("project_id", "channel", "address"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(10))
    address: Mapped[str] = mapped_column(String(2048))
    reason: Mapped[str] = mapped_column(String(40), default="manual")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SandboxMessage(Base):
    """What the sandbox provider 'sent': the embedded default for email and SMS."""

    __tablename__ = "sandbox_messages"
    __table_args__ = (Index("ix_sandbox_messages_project", "project_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), default=None
    )
    channel: Mapped[str] = mapped_column(String(10))
    to: Mapped[str] = mapped_column(String(2048))
    content: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SendSkip(Base):
    """A user a per-user send (trigger, rule, API campaign) did not reach, and why.

    Fan-outs to segments count their skips on the send instead (`Send.skipped`): a row per
    skipped user of a million-user broadcast would cost more than the messages.
    """

    __tablename__ = "send_skips"
    __table_args__ = (
        Index("ix_send_skips_user", "user_id", "id"),
        Index("ix_send_skips_campaign", "campaign_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
    campaign_id: Mapped[int | None] = mapped_column(BigId, default=None)
    send_id: Mapped[int | None] = mapped_column(BigId, default=None)
    channel: Mapped[str | None] = mapped_column(String(10), default=None)
    # not_in_target, no_address, opted_out, capped, quiet_hours, holdout, outside_window, ...
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
