"""Fan a segment or broadcast send out into message rows, in chunks, resumably."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from app.models import User
from app.models.base import utcnow
from app.models.message import Send
from app.services.outbox import FANOUT_LEASE, enqueue_delivery, insert_for_users
from workers.channels import CHANNELS

log = logging.getLogger(__name__)

# Users per fan-out transaction: one chunk is one commit and one lease renewal.
CHUNK = 5000


def fan_out(session: Session, send_id: int) -> int:
    """Create this send's next chunks of messages; returns how many rows were created."""
    created_total = 0
    while True:
        now = utcnow()
        send = session.get(
            Send, send_id, with_for_update=session.get_bind().dialect.name == "postgresql"
        )
        if send is None or send.status != "fanning_out":
            session.rollback()
            return created_total
        where = _audience(session, send, now)
        upper = session.scalar(
            select(User.id)
            .where(where, User.id > send.cursor)
            .order_by(User.id)
            .offset(CHUNK - 1)
            .limit(1)
        )
        bound = (
            User.id > send.cursor
            if upper is None
            else and_(User.id > send.cursor, User.id <= upper)
        )
        ids: list[int] = []
        candidates = 0
        users = User.__table__
        for name in send.channels:
            # One row per address: per user, or per device on push (a join).
            source = CHANNELS[name].fanout_source(users)
            chosen = and_(where, bound, source.where)
            candidates += (
                session.scalar(select(func.count()).select_from(source.from_).where(chosen)) or 0
            )
            ids += insert_for_users(
                session,
                send,
                channel=name,
                address=source.address,
                where=chosen,
                now=now,
                from_=source.from_,
            )
        send.recipients += len(ids)
        send.deduplicated += candidates - len(ids)
        if upper is None:
            send.status = "done"
            send.finished_at = now
            send.lease_until = None
        else:
            send.cursor = upper
            send.lease_until = now + FANOUT_LEASE
        enqueue_delivery(session, ids)
        session.commit()
        created_total += len(ids)
        if upper is None:
            return created_total


def _audience(session: Session, send: Send, now: datetime) -> Any:
    """Identified users of the project, narrowed by the send's segment if it has one."""
    from app.services.segments import members_clause
    from journeys.filters import parse_filter

    target = send.target or {}
    cond = parse_filter(target.get("segment") or {"all": []})
    return members_clause(
        cond, project_id=send.project_id, dialect_name=session.get_bind().dialect.name, now=now
    )
