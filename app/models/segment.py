"""Segments: named, stored filters over a project's users (dynamic: evaluated when asked)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigId, JSONType, UTCDateTime, utcnow
from app.models.user import User


class Segment(Base):
    """A named filter; `filter` is the normalized condition tree of `journeys.filters.to_json`."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    filter: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Segment filters compile attribute equality to JSONB containment (`attributes @> {...}`,
# app.segment_sql), which this index serves. PostgreSQL only: SQLite has no GIN.
Index(
    "ix_users_attributes_gin",
    User.__table__.c.attributes,
    postgresql_using="gin",
    postgresql_ops={"attributes": "jsonb_path_ops"},
).ddl_if(dialect="postgresql")
