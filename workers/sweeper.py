"""The sweeper: every second, re-enqueue what is due and unclaimed, expire what is too late.

It is what makes a lost broker message or a crashed worker a delay instead of a loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from app.db import defer
from app.models.message import Message, MessageStatusChange
from app.services.audiences import expire_memberships
from workers.fanout import BATCH, reclaim_stalled_sends

log = logging.getLogger(__name__)
SWEEP_LIMIT = 5000


@dataclass
class SweepStats:
    """What one sweep did."""

    expired: int = 0
    recovered: int = 0
    enqueued: int = 0
    sends: int = 0
    memberships: int = 0


def sweep(session: Session, now: datetime, settings: dict[str, Any]) -> SweepStats:
    """One pass; the caller owns the session and this commits its work."""
    stats = SweepStats()
    expired = list(
        session.scalars(
            update(Message)
            .where(Message.status == "queued", Message.expires_at <= now)
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
    stats.expired = len(expired)
    lease = timedelta(seconds=settings.get("SENDING_LEASE_SECONDS", 300))
    recovered = list(
        session.scalars(
            update(Message)
            .where(Message.status == "sending", Message.claimed_at < now - lease)
            .values(
                status="queued",
                enqueued_at=None,
                reason="worker lost its claim; retrying",
                updated_at=now,
            )
            .returning(Message.id)
        )
    )
    stats.recovered = len(recovered)
    requeue_after = timedelta(seconds=settings.get("REQUEUE_AFTER_SECONDS", 60))
    due = (
        select(Message.id)
        .where(
            Message.status == "queued",
            or_(Message.not_before.is_(None), Message.not_before <= now),
            or_(Message.enqueued_at.is_(None), Message.enqueued_at < now - requeue_after),
        )
        .order_by(Message.id)
        .limit(SWEEP_LIMIT)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if ids:
        session.execute(update(Message).where(Message.id.in_(ids)).values(enqueued_at=now))
        for start in range(0, len(ids), BATCH):
            defer(session, "deliver_messages", ids[start : start + BATCH])
    stats.enqueued = len(ids)
    stats.sends = len(reclaim_stalled_sends(session, now))
    while True:  # memberships whose TTL passed become recorded leaves (cause `ttl`)
        expired_members = expire_memberships(session, now)
        stats.memberships += expired_members
        if expired_members < 5000:
            break
    session.commit()
    if stats.expired or stats.recovered or stats.enqueued or stats.sends or stats.memberships:
        log.info("sweep: %s", stats)
    return stats
