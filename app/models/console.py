"""Console accounts: people who log in to the marketer console, their roles and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow

# Stored in console_memberships.role (never rename); each role can do what the ones after it can.
ROLES = ("admin", "marketer", "viewer")


class ConsoleUser(Base):
    """A person with a console login (per installation); `is_owner` may do anything anywhere."""

    __tablename__ = "console_users"
    __table_args__ = (UniqueConstraint("email"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Stored lower-cased: logins compare case-insensitively.
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    # argon2id (argon2-cffi's PasswordHasher), never the password.
    password_hash: Mapped[str] = mapped_column(String(255))
    is_owner: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ConsoleMembership(Base):
    """A console user's role in one project."""

    __tablename__ = "console_memberships"
    __table_args__ = (
        UniqueConstraint("console_user_id", "project_id"),
        CheckConstraint("role IN ('admin', 'marketer', 'viewer')", name="role"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    console_user_id: Mapped[int] = mapped_column(ForeignKey("console_users.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))


class ConsoleInvite(Base):
    """A one-time link to create a console account: the first owner's, or an invitation to a
    project with a role. Only the token's SHA-256 is stored."""

    __tablename__ = "console_invites"
    __table_args__ = (UniqueConstraint("token_hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    # NULL project: the installation's first owner.
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), default=None
    )
    role: Mapped[str | None] = mapped_column(String(20), default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("console_users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AuditEntry(Base):
    """Who changed what, with the object before and after (console changes)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_project_id_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), default=None
    )
    console_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("console_users.id", ondelete="SET NULL"), default=None
    )
    # Kept when the account is deleted: the log still says who it was.
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(50))
    object_id: Mapped[str | None] = mapped_column(String(255), default=None)
    summary: Mapped[str] = mapped_column(Text, default="")
    before: Mapped[Any] = mapped_column(JSONType, default=None, nullable=True)
    after: Mapped[Any] = mapped_column(JSONType, default=None, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
