"""One end user's in-app inbox: list, mark read, archive, and the replays of the SSE stream."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from app.errors import Forbidden, NotFound
from app.models import User
from app.models.message import REACHED, Message
from app.services.outbox import advance_many
from app.services.profiles import load_users_by_external_id
from app.services.projects import user_hash

# Ids are 64-bit in the database: a larger one names no message (and SQLite cannot bind it).
MAX_ID = 2**63 - 1
PAGE_MAX = 200
REPLAY_LIMIT = 500
# Messages are sent by concurrent workers, so one with a lower id can be sent after a higher
# one the client already saw. A replay covers everything after the last id seen plus whatever
# was sent shortly before that message; clients dedupe frames by id.
REPLAY_OVERLAP = timedelta(seconds=60)


@dataclass(frozen=True)
class InboxItem:
    """One inbox entry, as the list and the stream show it."""

    id: int
    title: str | None
    body: str | None
    url: str | None
    data: Any
    count: int
    replaces: int | None
    created_at: datetime
    read_at: datetime | None
    archived: bool

    @classmethod
    def from_message(cls, m: Message) -> InboxItem:
        """The entry of a stored message (its rendered content)."""
        content = m.rendered or {}
        return cls(
            id=m.id,
            title=content.get("title"),
            body=content.get("body"),
            url=content.get("url"),
            data=content.get("data"),
            count=m.increment_count,
            replaces=m.replaces_id,
            created_at=m.created_at,
            read_at=m.read_at,
            archived=m.archived_at is not None,
        )

    @classmethod
    def from_publication(cls, payload: dict[str, Any], now: datetime) -> InboxItem:
        """The entry of a message just sent, from what delivery published (no database read)."""
        content = payload.get("content") or {}
        return cls(
            id=payload["id"],
            title=content.get("title"),
            body=content.get("body"),
            url=content.get("url"),
            data=content.get("data"),
            count=payload.get("count", 1),
            replaces=payload.get("replaces"),
            created_at=now,
            read_at=None,
            archived=False,
        )


@dataclass(frozen=True)
class InboxPage:
    """A page of the inbox, newest first."""

    items: list[InboxItem]
    unread_count: int
    next_cursor: str | None


def verify_end_user(identity_secret: str, user_id: str, given: str) -> None:
    """Refuse (403) a userHash that is not hex HMAC-SHA256(identity secret, userId)."""
    if not hmac.compare_digest(user_hash(identity_secret, user_id), given.lower()):
        raise Forbidden("userHash does not match userId", {"userHash": ["invalid"]})


def find_end_user(session: Session, *, project_id: int, user_id: str) -> User:
    """The project's user with this userId (404 naming `userId` otherwise)."""
    user = load_users_by_external_id(session, project_id, [user_id]).get(user_id)
    if user is None:
        raise NotFound("unknown user", {"userId": ["not found"]})
    return user


def _visible(user_pk: int) -> ColumnElement[bool]:
    """In-app messages a user can see: reached, not replaced by a newer one of its group."""
    newer = aliased(Message)
    replaced = (
        select(newer.id).where(newer.replaces_id == Message.id, newer.status.in_(REACHED)).exists()
    )
    return and_(
        Message.user_id == user_pk,
        Message.channel == "inapp",
        Message.status.in_(REACHED),
        ~replaced,
    )


def list_inbox(
    session: Session,
    *,
    user_pk: int,
    limit: int,
    before_id: int | None = None,
    archived: bool = False,
) -> InboxPage:
    """A page of the inbox (or the archive) below `before_id`, and the unread count."""
    limit = min(limit, PAGE_MAX)
    stmt = select(Message).where(
        _visible(user_pk),
        Message.archived_at.is_not(None) if archived else Message.archived_at.is_(None),
    )
    if before_id is not None:
        stmt = stmt.where(Message.id < before_id)
    rows = list(session.scalars(stmt.order_by(Message.id.desc()).limit(limit + 1)))
    cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    unread = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(_visible(user_pk), Message.read_at.is_(None), Message.archived_at.is_(None))
    )
    return InboxPage([InboxItem.from_message(m) for m in rows[:limit]], unread or 0, cursor)


def _check_id(message_id: int | None) -> None:
    if message_id is not None and not 0 < message_id <= MAX_ID:
        raise NotFound(f"message {message_id} not in this inbox", {"messageId": ["not found"]})


def _refuse_unknown(session: Session, user_pk: int, message_id: int | None, updated: int) -> None:
    """Nothing changed: a 404 unless the message is in this inbox (then it was a repeat)."""
    if message_id is None or updated:
        return
    exists = session.scalar(select(Message.id).where(_visible(user_pk), Message.id == message_id))
    if exists is None:
        raise NotFound(f"message {message_id} not in this inbox", {"messageId": ["not found"]})


def mark_read(session: Session, *, user_pk: int, message_id: int | None, now: datetime) -> int:
    """Mark one message (or all of the inbox, `message_id=None`: not the archive) read; how
    many were unread.

    A read is the in-app open: each newly read message moves to `opened` through the outbox's
    `advance` path (a status history row and the internal `message.opened` event carrying its
    campaign and channel), as an email's tracking pixel does, so rules, triggered campaigns
    and journeys hear of it. `read_at` makes it once only: reading again changes nothing. A
    message already `clicked` (an in-app link followed first) is marked read but keeps its
    status and emits no `message.opened`, as an email opened after its click does.

    engagement.TOO_FAST (opens within 2 s of sending ignored) does not apply: that rule
    filters mail prefetchers and link scanners fetching a pixel on their own, while this is
    a call made for the end user with their userHash (or a backend's secret key), an
    explicit action and never a machine's guess. A person may well read a message the
    second it appears in a live inbox.
    """
    _check_id(message_id)
    stmt = update(Message).where(_visible(user_pk), Message.read_at.is_(None))
    if message_id is not None:
        stmt = stmt.where(Message.id == message_id)
    else:  # an archived message was put away unread: "read all" does not read it
        stmt = stmt.where(Message.archived_at.is_(None))
    read = list(
        session.scalars(
            stmt.values(read_at=now, updated_at=now)
            .returning(Message.id)
            .execution_options(synchronize_session=False)
        )
    )
    advance_many(session, read, "opened", at=now)
    session.flush()
    _refuse_unknown(session, user_pk, message_id, len(read))
    return len(read)


def archive_message(session: Session, *, user_pk: int, message_id: int, now: datetime) -> int:
    """Move one message to the archive (idempotent)."""
    _check_id(message_id)
    result = session.execute(
        update(Message)
        .where(_visible(user_pk), Message.id == message_id)
        .values(archived_at=now, updated_at=now),
        execution_options={"synchronize_session": False},
    )
    session.flush()
    updated: int = result.rowcount  # type: ignore[attr-defined]
    _refuse_unknown(session, user_pk, message_id, updated)
    return updated


def replay(
    session: Session, *, user_pk: int, after_id: int | None, since: datetime | None = None
) -> list[InboxItem]:
    """What a stream may have missed: after `after_id` (plus the overlap), or sent since `since`."""
    if after_id is not None:
        reference = session.scalar(
            select(Message.sent_at).where(Message.id == after_id, Message.user_id == user_pk)
        )
        missed: ColumnElement[bool] = Message.id > after_id
        if reference is not None:
            missed = or_(
                missed,
                and_(Message.id < after_id, Message.sent_at >= reference - REPLAY_OVERLAP),
            )
    elif since is not None:
        missed = Message.sent_at >= since - REPLAY_OVERLAP
    else:
        return []
    rows = session.scalars(
        select(Message).where(_visible(user_pk), missed).order_by(Message.id).limit(REPLAY_LIMIT)
    )
    return [InboxItem.from_message(m) for m in rows]


def load_items(session: Session, *, user_pk: int, ids: Iterable[int]) -> list[InboxItem]:
    """The visible messages among `ids`, in id order (a frame too large for its notification)."""
    wanted = [i for i in ids if 0 < i <= MAX_ID]
    if not wanted:
        return []
    rows = session.scalars(
        select(Message).where(_visible(user_pk), Message.id.in_(wanted)).order_by(Message.id)
    )
    return [InboxItem.from_message(m) for m in rows]
