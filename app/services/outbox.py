"""The outbox: the one place that builds message rows and hands them to the delivery workers.

Direct sends insert rows built by `message_row`; fan-out inserts the same columns with
`insert_for_users` (INSERT ... SELECT over the users table). Either way an address a send
already reached is skipped by the unique constraint, and the new ids are enqueued with
`enqueue_delivery` once the transaction commits.

After a message left, what happens to it (a provider's report, a receipt, an open, a click)
moves it forward with `advance` (or `advance_many` for a batch, as an inbox's read-all), the
one place that writes a later status, its history row, its `MessageEvent` and its internal
outcome event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, overload

from sqlalchemy import insert, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.db import bulk_insert, defer, ids_in, insert_ignore
from app.models import MessageEvent, User
from app.models.message import Message, MessageStatusChange, Send
from app.services import outcome_events

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


@overload
def insert_messages(
    session: Session, rows: Sequence[dict[str, Any]], *, with_send: Literal[False] = False
) -> list[int]: ...
@overload
def insert_messages(
    session: Session, rows: Sequence[dict[str, Any]], *, with_send: Literal[True]
) -> list[tuple[int, int]]: ...
def insert_messages(
    session: Session, rows: Sequence[dict[str, Any]], *, with_send: bool = False
) -> list[int] | list[tuple[int, int]]:
    """Insert rows (already reached addresses skipped) and enqueue the new ones: their ids,
    or (id, send id) pairs `with_send`."""
    if not rows:
        return []
    found = bulk_insert(session, Message, rows, conflict=DEDUP_COLUMNS, returning=("id", "send_id"))
    enqueue_delivery(session, [r[0] for r in found])
    if with_send:
        return [(r[0], r[1]) for r in found]
    return [r[0] for r in found]


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


# --- after sending: statuses only move forward ----------------------------------------------

# The path of a message that reached its address; a report moves it only up this path.
PROGRESS = ("queued", "sending", "sent", "delivered", "opened", "clicked")
# Later statuses that become internal events (`message.<status>`).
OUTCOMES = frozenset({"delivered", "opened", "clicked", "failed"})


def allowed_from(status: str, *, while_sending: bool = False) -> tuple[str, ...]:
    """The statuses a message may move to `status` from.

    A step of PROGRESS comes from any earlier step from `sent` on (an open skips an unreported
    delivery); any other status (`failed`) ends only a message that is `sent`, so a late
    bounce never undoes a delivery. `while_sending`: also from `sending`, for a provider's
    report that can arrive before the worker recorded the send (Twilio's status callback).
    """
    if status in PROGRESS:
        earlier = PROGRESS[PROGRESS.index("sent") : PROGRESS.index(status)]
    else:
        earlier = ("sent",)
    return ("sending", *earlier) if while_sending else earlier


def record_event(
    session: Session,
    message: Message,
    kind: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Record `kind` (open, click, delivered, bounce...) for the message once; True if new."""
    result = session.execute(
        insert_ignore(session, MessageEvent, ["message_id", "kind"])
        .values(
            project_id=message.project_id,
            message_id=message.id,
            kind=kind,
            detail=detail or None,
            at=at,
        )
        .returning(MessageEvent.id)
    )
    return bool(result.all())


def advance(
    session: Session,
    message: Message,
    status: str,
    *,
    at: datetime,
    reason: str | None = None,
    event: str | None = None,
    detail: dict[str, Any] | None = None,
    while_sending: bool = False,
) -> bool:
    """Move the message forward to `status` (never back, never out of a final status); True
    if it moved.

    One conditional UPDATE decides, so reports arriving twice, late or out of order move a
    message at most once. A move writes the history row, the `event` MessageEvent when given
    (once per kind) and, for OUTCOMES, the internal `message.<status>` event.
    """
    moved = session.execute(
        update(Message)
        .where(
            Message.id == message.id,
            Message.status.in_(allowed_from(status, while_sending=while_sending)),
        )
        .values(status=status, reason=reason, updated_at=at)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not moved:
        return False
    # The loaded object stays in step without a reload (and without a second UPDATE on flush).
    for name, value in (("status", status), ("reason", reason), ("updated_at", at)):
        set_committed_value(message, name, value)
    session.execute(
        insert(MessageStatusChange).values(
            message_id=message.id, status=status, reason=reason, at=at
        )
    )
    if event is not None:
        record_event(session, message, event, at, detail)
    if status in OUTCOMES:
        outcome_events.emit(session, [outcome_events.outcome(message, status, at, reason)])
    return True


# Ids per statement in `advance_many` (SQLite binds one parameter per id).
ADVANCE_CHUNK = 500


def advance_many(
    session: Session, message_ids: Sequence[int], status: str, *, at: datetime
) -> list[int]:
    """`advance` for many messages at once (an inbox's read-all); the ids that moved.

    The same conditional UPDATE per chunk of ids, so each message moves at most once and
    never back; each move gets its history row and, for OUTCOMES, its internal event (one
    INSERT of each per chunk, not three statements a message). Loaded `Message` objects are
    not refreshed: callers pass ids they have not loaded.
    """
    moved: list[int] = []
    ids = sorted(set(message_ids))
    for start in range(0, len(ids), ADVANCE_CHUNK):
        chunk = ids[start : start + ADVANCE_CHUNK]
        result = session.execute(
            update(Message)
            .where(ids_in(session, Message.id, chunk), Message.status.in_(allowed_from(status)))
            .values(status=status, reason=None, updated_at=at)
            .returning(
                Message.id, Message.project_id, Message.user_id, Message.send_id, Message.channel
            )
            .execution_options(synchronize_session=False)
        )
        rows = sorted(result, key=lambda row: row.id)
        if not rows:
            continue
        bulk_insert(
            session,
            MessageStatusChange,
            [{"message_id": r.id, "status": status, "reason": None, "at": at} for r in rows],
        )
        if status in OUTCOMES:
            outcome_events.emit(session, [outcome_events.outcome(r, status, at) for r in rows])
        moved.extend(r.id for r in rows)
    return moved
