"""Direct sends: create message rows (the outbox) and defer their delivery jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.db import defer, insert_ignore
from app.errors import InvalidInput
from app.models import Project, User
from app.models.base import utcnow
from app.models.message import CHANNELS, Message, Send
from journeys.filters import FilterError, parse_filter, to_json

JOB_BATCH = 250
DEFAULT_CHANNELS = ("inapp",)


def parse_segment(raw: Any, field_name: str = "segment") -> dict[str, Any]:
    """Validate a segment in any input form; its normalized tree, or a 400 naming the node."""
    try:
        return to_json(parse_filter(raw))
    except FilterError as err:
        path = f"{field_name}.{err.path}" if err.path else field_name
        raise InvalidInput(f"Invalid segment: {err}", {path: [err.message]}) from None


def address_of(user: User, channel: str) -> str | None:
    """The user's address on a channel, or None if unreachable there."""
    if channel == "email":
        return user.email
    if channel == "sms":
        return user.phone
    if channel == "inapp":
        return f"user:{user.id}" if user.external_id is not None else None
    return None


@dataclass
class SendSummary:
    """What a send request created."""

    send: Send
    message_ids: list[int] = field(default_factory=list)
    deduplicated: int = 0
    unreachable: dict[str, int] = field(default_factory=dict)


def message_row(send: Send, *, channel: str, address: str, user_id: int | None,
                now: datetime, **extra: Any) -> dict[str, Any]:
    """A messages row for this send, ready for an executemany insert."""
    row = {
        "project_id": send.project_id, "send_id": send.id, "user_id": user_id,
        "channel": channel, "address": address, "dedup_key": f"send:{send.id}",
        "transactional": send.transactional, "status": "queued",
        "expires_at": now + timedelta(seconds=send.ttl_seconds) if send.ttl_seconds else None,
        "created_at": now, "updated_at": now, "enqueued_at": now, "attempts": 0,
        "increment_count": 1, "client_id": None, "increment_id": None, "content": None,
        "overrides": None,
    }
    row.update(extra)
    return row


def insert_messages(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert rows; an address this send already reached is skipped by the unique constraint.

    Jobs for the new ids are deferred until the transaction commits.
    """
    if not rows:
        return []
    stmt = insert_ignore(session, Message, ["project_id", "dedup_key", "channel", "address"])
    ids = list(session.scalars(stmt.returning(Message.id), list(rows)))
    for start in range(0, len(ids), JOB_BATCH):
        defer(session, "deliver_messages", ids[start:start + JOB_BATCH])
    return ids


def create_send(session: Session, *, project: Project, kind: str, channels: Sequence[str],
                content: dict[str, Any], ttl_seconds: int | None, transactional: bool,
                target: dict[str, Any] | None = None, template_id: int | None = None) -> Send:
    """Store a send request (its content once, not per recipient)."""
    send = Send(project_id=project.id, kind=kind, channels=list(channels), content=content,
                ttl_seconds=ttl_seconds, transactional=transactional, target=target,
                template_id=template_id, status="fanning_out" if target else "done",
                cursor=0, recipients=0, deduplicated=0, created_at=utcnow())
    session.add(send)
    session.flush()
    if target:
        defer(session, "fan_out_send", send.id)
    return send


def send_to_users(session: Session, *, send: Send, users: Sequence[User]) -> SendSummary:
    """One message per (user, channel) the user is reachable on."""
    now = utcnow()
    summary = SendSummary(send)
    rows = []
    for user in users:
        for channel in send.channels:
            address = address_of(user, channel)
            if address is None:
                summary.unreachable[channel] = summary.unreachable.get(channel, 0) + 1
                continue
            rows.append(message_row(send, channel=channel, address=address, user_id=user.id,
                                    now=now))
    summary.message_ids = insert_messages(session, rows)
    summary.deduplicated = len(rows) - len(summary.message_ids)
    send.recipients = len(summary.message_ids)
    send.deduplicated = summary.deduplicated
    return summary


def users_by_external_ids(session: Session, project_id: int, external_ids: Sequence[str]
                          ) -> list[User]:
    """Profiles for userIds, created on first sight, in request order."""
    from app.services.users import ensure_user_ids

    ids = ensure_user_ids(session, project_id, external_ids, utcnow())
    rows = {u.id: u for u in session.scalars(select(User).where(User.id.in_(list(ids.values()))))}
    return [rows[ids[e]] for e in dict.fromkeys(external_ids)]


def validate_channels(raw: Any) -> list[str]:
    """A non-empty list of known channels, duplicates removed."""
    if raw is None:
        return list(DEFAULT_CHANNELS)
    if not isinstance(raw, list) or not raw or not all(c in CHANNELS for c in raw):
        raise InvalidInput("channels must be a non-empty list of " + ", ".join(CHANNELS),
                           {"channels": [f"one or more of {', '.join(CHANNELS)}"]})
    return list(dict.fromkeys(raw))


def message_log_query(project_id: int, *, after_id: int | None, filters: dict[str, Any]
                      ) -> Select[tuple[Message]]:
    """Messages of a project, newest last, filtered by user, send, channel, status and time."""
    stmt = select(Message).where(Message.project_id == project_id).order_by(Message.id)
    if after_id is not None:
        stmt = stmt.where(Message.id > after_id)
    if filters.get("user_pk") is not None:
        stmt = stmt.where(Message.user_id == filters["user_pk"])
    for name, column in (("send_id", Message.send_id), ("channel", Message.channel),
                         ("status", Message.status)):
        if filters.get(name) is not None:
            stmt = stmt.where(column == filters[name])
    if filters.get("since") is not None:
        stmt = stmt.where(Message.created_at >= filters["since"])
    if filters.get("until") is not None:
        stmt = stmt.where(Message.created_at < filters["until"])
    return stmt
