"""Projects (tenants) and their API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow

KEY_KINDS = ("secret", "publishable")


class Project(Base):
    """A tenant: every other row belongs to exactly one project."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Secret used by the customer's backend to sign end-user ids (HMAC-SHA256).
    identity_secret: Mapped[str] = mapped_column(String(100))
    # ISO 3166 region for phone numbers written without a country code.
    default_region: Mapped[str | None] = mapped_column(String(2), default=None)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A secret (`sk_`) or publishable (`pk_`) key, stored as a SHA-256 hash only."""

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("key_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    # The public part of the key (`sk_<key_id>_...`), also the access key id for token exchange.
    key_id: Mapped[str] = mapped_column(String(40))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    @property
    def prefix(self) -> str:
        """The displayable, non-secret start of the key (`sk_abc123`)."""
        return f"{'sk' if self.kind == 'secret' else 'pk'}_{self.key_id}"
