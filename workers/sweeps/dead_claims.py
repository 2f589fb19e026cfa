"""`sending` claims older than the sending lease belong to a crashed worker: queue them again."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models.message import Message

NAME = "recovered"
BATCH = 5000


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Recover up to BATCH claims."""
    lease = timedelta(seconds=settings.get("SENDING_LEASE_SECONDS", 300))
    dead = (
        select(Message.id)
        .where(Message.status == "sending", Message.claimed_at < now - lease)
        .limit(BATCH)
        .scalar_subquery()
    )
    recovered = session.scalars(
        update(Message)
        .where(Message.id.in_(dead), Message.status == "sending")
        .values(
            status="queued",
            enqueued_at=None,
            reason="worker lost its claim; retrying",
            updated_at=now,
        )
        .returning(Message.id)
    )
    return len(list(recovered))
