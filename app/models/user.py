"""End users of a project: profile, reserved fields, attributes and anonymous ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow


class User(Base):
    """A person known to a project, by `userId` (external_id) or only by anonymous ids."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        Index("ix_users_project_email", "project_id", "email"),
        Index("ix_users_project_phone", "project_id", "phone"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # The customer's user id; NULL for a profile known only by anonymous ids.
    external_id: Mapped[str | None] = mapped_column(String(255), default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(32), default=None)
    language: Mapped[str | None] = mapped_column(String(35), default=None)
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # What the person chose on the preference page: {"marketing": false, "channels": {"sms":
    # false}, "topics": {"news": true}}; None = nothing chosen (every default applies).
    preferences: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AnonymousId(Base):
    """An anonymous id (cookie, device) and the profile it currently belongs to."""

    __tablename__ = "anonymous_ids"
    __table_args__ = (UniqueConstraint("project_id", "anonymous_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    anonymous_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
