"""Queued, due messages whose job was lost or never sent (broker outage) are enqueued again."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.models.message import Message
from app.services.outbox import enqueue_delivery

NAME = "enqueued"
BATCH = 5000


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Enqueue up to BATCH due messages."""
    requeue_after = timedelta(seconds=settings.get("REQUEUE_AFTER_SECONDS", 60))
    due = (
        select(Message.id)
        .where(
            Message.status == "queued",
            or_(Message.not_before.is_(None), Message.not_before <= now),
            or_(Message.enqueued_at.is_(None), Message.enqueued_at < now - requeue_after),
        )
        .order_by(Message.id)
        .limit(BATCH)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if ids:
        session.execute(update(Message).where(Message.id.in_(ids)).values(enqueued_at=now))
        enqueue_delivery(session, ids)
    return len(ids)
