"""The outbox: the one place that builds message rows and hands them to the delivery workers.

Direct sends insert rows built by `message_row`; fan-out inserts the same columns with
`insert_for_users` (INSERT ... SELECT over the users table). Either way an address a send
already reached is skipped by the unique constraint, and the new ids are enqueued with
`enqueue_delivery` once the transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from app.db import defer, insert_ignore
from app.models import User
from app.models.message import Message, Send

# Messages per delivery job: large enough to amortise a job's fixed cost, small enough that a
# crashed worker's claims (recovered after the sending lease) are few.
DELIVERY_BATCH = 250
# How long a fan-out may run before the sweeper hands it to another worker.
FANOUT_LEASE = timedelta(minutes=5)
DEDUP_COLUMNS = ["project_id", "dedup_key", "channel", "address"]


def _send_columns(send: Send, now: datetime) -> dict[str, Any]:
    """The columns every message of a send shares."""
    return {
        "project_id": send.project_id,
        "send_id": send.id,
        "dedup_key": send.dedup_key or f"send:{send.id}",
        "transactional": send.transactional,
        "status": "queued",
        "expires_at": now + timedelta(seconds=send.ttl_seconds) if send.ttl_seconds else None,
        "created_at": now,
        "updated_at": now,
        "enqueued_at": now,
        "attempts": 0,
        "increment_count": 1,
    }


def message_row(
    send: Send, *, channel: str, address: str, user_id: int | None, now: datetime, **extra: Any
) -> dict[str, Any]:
    """A messages row for this send, ready for an executemany insert."""
    row = {
        **_send_columns(send, now),
        "user_id": user_id,
        "channel": channel,
        "address": address,
        "increment_id": None,
        "content": None,
        "overrides": None,
    }
    row.update(extra)
    return row


def enqueue_delivery(session: Session, ids: Sequence[int]) -> None:
    """Defer delivery jobs for these message ids, in batches, until the transaction commits."""
    for start in range(0, len(ids), DELIVERY_BATCH):
        defer(session, "deliver_messages", list(ids[start : start + DELIVERY_BATCH]))


def insert_messages(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert rows (already reached addresses skipped) and enqueue the new ones."""
    if not rows:
        return []
    stmt = insert_ignore(session, Message, DEDUP_COLUMNS)
    ids = list(session.scalars(stmt.returning(Message.id), list(rows)))
    enqueue_delivery(session, ids)
    return ids


def insert_for_users(
    session: Session,
    send: Send,
    *,
    channel: str,
    address: Any,
    where: Any,
    now: datetime,
    from_: Any = None,
) -> list[int]:
    """INSERT ... SELECT one message per row matching `where`, addressed by `address`.

    Rows are users, or those of `from_` when the channel's addresses come from a join of the users
    table (push: one row, hence one message, per device). The caller enqueues the ids
    (fan-out enqueues once per chunk, after all its channels).
    """
    table = Message.__table__
    constants = _send_columns(send, now)
    source = (
        select(
            *[literal(value, type_=table.c[name].type) for name, value in constants.items()],
            User.id,
            literal(channel),
            address,
        )
        .where(where)
        .order_by(User.id)
    )
    if from_ is not None:
        source = source.select_from(from_)
    stmt = (
        insert_ignore(session, Message, DEDUP_COLUMNS)
        .from_select([*constants, "user_id", "channel", "address"], source)
        .returning(Message.id)
    )
    return list(session.scalars(stmt))
