"""Tracked events: user events and global (non-user) events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow


class Event(Base):
    """One accepted event, committed before the API answers."""

    __tablename__ = "events"
    __table_args__ = (
        # A client messageId is applied once per project, whenever it is sent again.
        UniqueConstraint("project_id", "message_id"),
        Index("ix_events_project_user_name_time", "project_id", "user_id", "name", "timestamp"),
        Index("ix_events_unprocessed", "project_id", "processed_at", "id"),
        # Erasure and profile merges find a user's events without the project prefix.
        Index("ix_events_user", "user_id"),
        # The event processor's sweep finds events whose job was lost (processed_at unset).
        Index(
            "ix_events_pending",
            "id",
            postgresql_where=text("processed_at IS NULL"),
            sqlite_where=text("processed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # NULL for a global event, and for an event whose user was erased.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    name: Mapped[str] = mapped_column(String(255))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    # Where the event came from: api, pixel, segment (Segment-spec endpoints), sdk, or
    # internal (delivery outcomes: message.delivered, message.opened, ...).
    source: Mapped[str] = mapped_column(String(20), default="api")
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set once the event processor (rules, triggered campaigns, journeys) is done with it.
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # When the sweeper last enqueued it again (NULL: only the job sent at commit).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Set when the user behind this event was erased; its PII is gone.
    erased: Mapped[bool] = mapped_column(default=False)
