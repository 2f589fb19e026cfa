"""Audiences: named sets of users, their current members and the log of joins and leaves."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, UTCDateTime, utcnow

CHANGE_KINDS = ("joined", "left")
CHANGE_CAUSES = ("api", "rule", "topic", "ttl", "journey")


class Audience(Base):
    """A named set of users of a project, filled by the API, rules or topics."""

    __tablename__ = "audiences"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AudienceMember(Base):
    """A user's membership of an audience; current while `left_at` is NULL and not expired."""

    __tablename__ = "audience_members"
    __table_args__ = (
        UniqueConstraint("audience_id", "user_id"),
        # Segment filters test "is this user in audience X" with a correlated EXISTS per user.
        Index("ix_audience_members_project_user", "project_id", "user_id"),
        # The sweeper looks for memberships past their TTL that are not marked left yet.
        Index(
            "ix_audience_members_expiring",
            "expires_at",
            postgresql_where=text("left_at IS NULL AND expires_at IS NOT NULL"),
            sqlite_where=text("left_at IS NULL AND expires_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    audience_id: Mapped[int] = mapped_column(ForeignKey("audiences.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A membership with a TTL stops counting at expires_at, before the sweep marks it left.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AudienceChange(Base):
    """One join or leave, kept for the audience's history and for journey triggers."""

    __tablename__ = "audience_changes"
    __table_args__ = (
        CheckConstraint("kind IN ('joined', 'left')", name="kind"),
        CheckConstraint("cause IN ('api', 'rule', 'topic', 'ttl', 'journey')", name="cause"),
        Index("ix_audience_changes_audience_at", "audience_id", "at"),
        # The user's timeline (and erasure) reads their changes.
        Index("ix_audience_changes_user", "user_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    audience_id: Mapped[int] = mapped_column(ForeignKey("audiences.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))
    cause: Mapped[str] = mapped_column(String(10))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
