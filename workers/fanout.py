"""Fan a segment or broadcast send out into message rows, in chunks, resumably."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, func, literal, select, update
from sqlalchemy.orm import Session

from app.db import defer, insert_ignore
from app.models import User
from app.models.base import utcnow
from app.models.message import Message, Send

log = logging.getLogger(__name__)

CHUNK = 5000
BATCH = 250
LEASE = timedelta(minutes=5)


def address_column(channel: str) -> Any:
    """The users column (or expression) that is a channel's address."""
    if channel == "email":
        return User.email
    if channel == "sms":
        return User.phone
    return literal("user:").concat(cast(User.id, String))


def candidate_filter(channel: str) -> Any:
    """Users reachable on a channel at all (an address; in-app needs a known userId)."""
    if channel == "email":
        return User.email.is_not(None)
    if channel == "sms":
        return User.phone.is_not(None)
    return User.external_id.is_not(None)


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
        for channel in send.channels:
            chosen = and_(where, bound, candidate_filter(channel))
            candidates += session.scalar(select(func.count()).select_from(User).where(chosen)) or 0
            ids += _insert_messages(session, send, channel, chosen, now)
        send.recipients += len(ids)
        send.deduplicated += candidates - len(ids)
        if upper is None:
            send.status = "done"
            send.finished_at = now
            send.lease_until = None
        else:
            send.cursor = upper
            send.lease_until = now + LEASE
        for start in range(0, len(ids), BATCH):
            defer(session, "deliver_messages", ids[start : start + BATCH])
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


def _insert_messages(
    session: Session, send: Send, channel: str, chosen: Any, now: datetime
) -> list[int]:
    """INSERT ... SELECT the chunk's messages; ON CONFLICT skips addresses already sent to."""
    expires = now + timedelta(seconds=send.ttl_seconds) if send.ttl_seconds else None
    source = (
        select(
            literal(send.project_id),
            literal(send.id),
            User.id,
            literal(channel),
            address_column(channel),
            literal(f"send:{send.id}"),
            literal(send.transactional),
            literal("queued"),
            literal(expires, type_=Message.__table__.c.expires_at.type),
            literal(now, type_=Message.__table__.c.created_at.type),
            literal(now, type_=Message.__table__.c.created_at.type),
            literal(now, type_=Message.__table__.c.created_at.type),
            literal(0),
            literal(1),
        )
        .where(chosen)
        .order_by(User.id)
    )
    stmt = insert_ignore(session, Message, ["project_id", "dedup_key", "channel", "address"])
    stmt = stmt.from_select(
        [
            "project_id",
            "send_id",
            "user_id",
            "channel",
            "address",
            "dedup_key",
            "transactional",
            "status",
            "expires_at",
            "created_at",
            "updated_at",
            "enqueued_at",
            "attempts",
            "increment_count",
        ],
        source,
    ).returning(Message.id)
    return list(session.scalars(stmt))


def reclaim_stalled_sends(session: Session, now: datetime) -> list[int]:
    """Sends whose fan-out lease ran out (worker died): hand them out again."""
    ids = list(
        session.scalars(
            select(Send.id)
            .where(
                Send.status == "fanning_out",
                (Send.lease_until.is_(None)) | (Send.lease_until < now),
            )
            .limit(100)
        )
    )
    if ids:
        session.execute(update(Send).where(Send.id.in_(ids)).values(lease_until=now + LEASE))
        for send_id in ids:
            defer(session, "fan_out_send", send_id)
    return ids
