"""Queued messages whose time to live passed become `expired` (with a history row)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from app.models.message import Message, MessageStatusChange

NAME = "expired"
BATCH = 5000


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Expire up to BATCH messages."""
    due = (
        select(Message.id)
        .where(Message.status == "queued", Message.expires_at <= now)
        .limit(BATCH)
        .scalar_subquery()
    )
    expired = list(
        session.scalars(
            update(Message)
            .where(Message.id.in_(due), Message.status == "queued")
            .values(status="expired", reason="TTL passed before it could be sent", updated_at=now)
            .returning(Message.id)
        )
    )
    if expired:
        session.execute(
            insert(MessageStatusChange),
            [
                {"message_id": i, "status": "expired", "reason": "TTL passed", "at": now}
                for i in expired
            ],
        )
    return len(expired)
