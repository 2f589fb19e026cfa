"""What the real channels keep: VAPID keys, push devices, engagement events, provider rates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow


class VapidKey(Base):
    """A project's VAPID key pair (P-256). The newest unretired one signs new subscriptions.

    Each subscription keeps the key it was made with and is always signed with that one, so a
    rotation never leaves devices that fail forever: retiring a key deactivates its devices.
    """

    __tablename__ = "vapid_keys"
    __table_args__ = (Index("ix_vapid_keys_project", "project_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # The application server key: base64url of the uncompressed P-256 point (65 bytes).
    public_key: Mapped[str] = mapped_column(String(100))
    # base64url of the 32-byte private scalar.
    private_key: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class PushSubscription(Base):
    """One browser push subscription (a device) of a profile; the same endpoint is one row."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (
        UniqueConstraint("project_id", "endpoint"),
        Index("ix_push_subscriptions_user", "user_id", "active"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # NULL: detached by an unverified merge (never handed to a user the caller may not be).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    vapid_key_id: Mapped[int] = mapped_column(ForeignKey("vapid_keys.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(2048))
    # The subscriber's P-256 public key and auth secret (base64url), RFC 8291.
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    topics: Mapped[list[str]] = mapped_column(JSONType, default=list)
    user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)
    language: Mapped[str | None] = mapped_column(String(35), default=None)
    active: Mapped[bool] = mapped_column(default=True)
    # Consecutive permanent failures; past a limit the subscription is deactivated.
    failures: Mapped[int] = mapped_column(default=0)
    deactivated_reason: Mapped[str | None] = mapped_column(Text, default=None)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageEvent(Base):
    """What happened to a message after it left: delivered, opened, clicked, bounced...

    One row per (message, kind): a click is recorded once per message however often the
    link is followed; `machine_open` is an open by a link scanner or mail prefetcher.
    """

    __tablename__ = "message_events"
    __table_args__ = (
        UniqueConstraint("message_id", "kind"),
        Index("ix_message_events_project", "project_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProviderRate(Base):
    """A provider's send-rate slot: the earliest time its next message may go (rate limits).

    Workers reserve slots with one conditional UPDATE, so the limit holds across processes and
    hosts; a message past its slot waits (`not_before`) without using up a retry.
    """

    __tablename__ = "provider_rates"
    __table_args__ = (UniqueConstraint("project_id", "provider"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(40))
    next_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
