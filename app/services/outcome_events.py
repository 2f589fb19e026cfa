"""Delivery outcomes as internal events, so rules, campaigns and journeys can react to them.

A message reaching `delivered`, `opened`, `clicked` or `failed`, or its person unsubscribing
through it, becomes an `Event` of the message's user (`source="internal"`, name
`message.<outcome>`, properties `{messageId, sendId, campaignId, channel, reason?}`, timestamp
= when the outcome happened), handed to the event processor like any tracked event. Messages
without a user (an API campaign to a bare address) have no one to attach it to: skipped.

Each (message, outcome) is stored at most once: the event's `message_id` (the column that
dedups client events per project) is `cairn:message.<outcome>:<message id>`, so a repeated
callback, a retried job or a race between two reports inserts nothing the second time. A batch
is one INSERT (and one SELECT for the sends' campaigns): the delivery worker records up to 250
messages per step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import defer, insert_ignore
from app.models import Event
from app.models.base import utcnow
from app.models.message import Send
from app.services.events import RESERVED_MESSAGE_ID_PREFIX

NAMES = frozenset({"delivered", "opened", "clicked", "failed", "unsubscribed"})
SOURCE = "internal"
MAX_REASON = 300


@dataclass(frozen=True)
class Outcome:
    """One outcome of one message: what the internal event is built from."""

    message_id: int
    project_id: int
    user_id: int | None
    send_id: int | None
    channel: str
    name: str  # one of NAMES
    at: datetime
    reason: str | None = None


class Sent(Protocol):
    """What an outcome reads of a message: a `Message`, or a row RETURNING these columns."""

    @property
    def id(self) -> int: ...
    @property
    def project_id(self) -> int: ...
    @property
    def user_id(self) -> int | None: ...
    @property
    def send_id(self) -> int | None: ...
    @property
    def channel(self) -> str: ...


def outcome(message: Sent, name: str, at: datetime, reason: str | None = None) -> Outcome:
    """The outcome `name` of a stored message (or of a row of its columns) at `at`."""
    return Outcome(
        message_id=message.id,
        project_id=message.project_id,
        user_id=message.user_id,
        send_id=message.send_id,
        channel=message.channel,
        name=name,
        at=at,
        reason=reason,
    )


def dedup_key(name: str, message_id: int) -> str:
    """The event's `message_id`: one `message.<name>` event per message."""
    return f"{RESERVED_MESSAGE_ID_PREFIX}message.{name}:{message_id}"


def emit(session: Session, outcomes: Iterable[Outcome]) -> list[int]:
    """Insert the internal events of these outcomes (once per message and name) and defer the
    event processor for them; the new event ids."""
    chosen: dict[tuple[int, str], Outcome] = {}
    for item in outcomes:
        if item.name not in NAMES:
            raise ValueError(f"unknown outcome {item.name!r}")
        if item.user_id is not None:
            chosen.setdefault((item.message_id, item.name), item)
    if not chosen:
        return []
    send_ids = {o.send_id for o in chosen.values() if o.send_id is not None}
    campaigns: dict[int, int | None] = (
        {
            row.id: row.campaign_id
            for row in session.execute(
                select(Send.id, Send.campaign_id).where(Send.id.in_(send_ids))
            )
        }
        if send_ids
        else {}
    )
    now = utcnow()
    rows = [_row(o, campaigns.get(o.send_id) if o.send_id else None, now) for o in chosen.values()]
    stmt = insert_ignore(session, Event, ["project_id", "message_id"]).returning(Event.id)
    ids = [row.id for row in session.execute(stmt, rows)]
    if ids:
        defer(session, "process_events", ids)
    return ids


def _row(item: Outcome, campaign_id: int | None, now: datetime) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "messageId": item.message_id,
        "sendId": item.send_id,
        "campaignId": campaign_id,
        "channel": item.channel,
    }
    if item.reason:
        properties["reason"] = item.reason[:MAX_REASON]
    return {
        "project_id": item.project_id,
        "user_id": item.user_id,
        "name": f"message.{item.name}",
        "properties": properties,
        "message_id": dedup_key(item.name, item.message_id),
        "source": SOURCE,
        "timestamp": item.at,
        "received_at": now,
        "erased": False,
    }
