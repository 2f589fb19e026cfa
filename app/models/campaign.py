"""Campaigns, their scheduled runs, holdout members and attributed conversions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Numeric, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow

# Stored strings: never rename. Kinds are the keys of the campaign kind registry.
KINDS = ("triggered", "api", "broadcast", "recurring")
STATUSES = ("draft", "active", "paused", "completed", "archived")
CATEGORIES = ("marketing", "transactional")
# campaign_runs.status
RUN_STATUSES = ("scheduled", "running", "done", "skipped", "expired", "cancelled")


class Campaign(Base):
    """A stored campaign, as in API.md (field names there; columns here)."""

    __tablename__ = "campaigns"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        # The event processor finds the active triggered campaigns listening for an event.
        Index("ix_campaigns_trigger", "project_id", "status", "trigger_event"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    # Why the status is what it is: auto-pause reason, completion, expiry.
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # {channel: template id}; resolved from ids or names on save.
    channels: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    # {"include": [tree | {"audience": id}], "exclude": [...]}; None = every identified user.
    target: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    # Triggered campaigns: {"event": name, "where": tree?}; trigger_event is the lookup key.
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    trigger_event: Mapped[str | None] = mapped_column(String(255), default=None)
    # {"sendAt", "cron", "timezone", "deliverIn", "missedLocalTime"} as given (normalized).
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ttl_seconds: Mapped[int | None] = mapped_column(default=None)
    urgency: Mapped[str | None] = mapped_column(String(10), default=None)
    category: Mapped[str] = mapped_column(String(20), default="marketing")
    topic: Mapped[str | None] = mapped_column(String(64), default=None)
    rate_per_minute: Mapped[int | None] = mapped_column(default=None)
    # {"event", "where"?, "valueField"?, "within": seconds}
    goal: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    holdout_percent: Mapped[int] = mapped_column(default=0)
    # Anything else a campaign carries that no query filters on (auto-pause threshold, params).
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Bumped on every edit; a run records the version it was planned from.
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class CampaignRun(Base):
    """One occurrence of a scheduled campaign (a broadcast, a cron tick, one time zone's slot).

    The unique occurrence makes a scheduler that fires twice, or a restart, create nothing twice.
    """

    __tablename__ = "campaign_runs"
    __table_args__ = (
        UniqueConstraint("campaign_id", "occurrence"),
        # The sweeper starts runs that are due.
        Index(
            "ix_campaign_runs_due",
            "due_at",
            postgresql_where=text("status = 'scheduled'"),
            sqlite_where=text("status = 'scheduled'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    # The scheduled instant (ISO, UTC) and, for local-time sends, "|<zone>".
    occurrence: Mapped[str] = mapped_column(String(100))
    # The users' zone this run covers (deliverIn userTimezone); None = everyone.
    zone: Mapped[str | None] = mapped_column(String(64), default=None)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Past this instant an unstarted run is recorded expired instead of sent late.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    status: Mapped[str] = mapped_column(String(20), default="scheduled")
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    campaign_version: Mapped[int] = mapped_column(default=1)
    send_id: Mapped[int | None] = mapped_column(BigId, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class CampaignHoldout(Base):
    """A user the campaign deliberately did not message (its holdout slice), for lift."""

    __tablename__ = "campaign_holdouts"
    __table_args__ = (
        UniqueConstraint("campaign_id", "user_id"),
        Index("ix_campaign_holdouts_user", "user_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CampaignConversion(Base):
    """A goal event attributed to a campaign (after a message, or in the holdout)."""

    __tablename__ = "campaign_conversions"
    __table_args__ = (
        UniqueConstraint("campaign_id", "event_id"),
        Index("ix_campaign_conversions_campaign", "campaign_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigId)
    # The message it is attributed to; None for a holdout member's conversion.
    message_id: Mapped[int | None] = mapped_column(BigId, default=None)
    holdout: Mapped[bool] = mapped_column(default=False)
    value: Mapped[float | None] = mapped_column(Numeric(18, 4), default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
