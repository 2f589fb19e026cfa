"""A user's timeline: events, audience moves, rule firings, journey steps, messages and skips,
newest first.

One query per source, each ordered by (at desc, id desc) and cut after the cursor, merged in
Python. Items are totally ordered by (at, source, id) descending, and the cursor is the
position of the last item of a page: the next page holds exactly the items below it, so no
item is lost or repeated across pages, however many share one instant.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from app.models import Audience, AudienceChange, Campaign, Event
from app.models.campaign import CampaignHoldout
from app.models.journey import Journey, JourneyRun, JourneyStepLog
from app.models.message import Message, MessageStatusChange, Send, SendSkip
from app.models.rule import Rule, RuleFiring

# What `?kinds=` filters on. Skips come from two sources (per-user send skips, holdouts).
KINDS = ("event", "audience", "rule", "journey", "message", "skip")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_TAG = "tl1"


@dataclass(frozen=True, order=True)
class Position:
    """Where an item sits in the timeline's order (compared as a tuple, newest is largest)."""

    at: datetime
    source: str
    id: int


def encode_cursor(position: Position) -> str:
    """An opaque cursor for the items after `position`."""
    micros = (position.at - _EPOCH) // timedelta(microseconds=1)
    text = f"{_CURSOR_TAG}:{micros}:{position.source}:{position.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position inside a cursor; ValueError when `encode_cursor` could not have made it."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error) as err:
        raise ValueError("malformed") from err
    parts = text.split(":")
    if len(parts) != 4 or parts[0] != _CURSOR_TAG or parts[2] not in _SOURCES:
        raise ValueError("malformed")
    micros, row_id = parts[1], parts[3]
    if not (micros.lstrip("-").isascii() and micros.lstrip("-").isdigit()):
        raise ValueError("malformed")
    if not (row_id.isascii() and row_id.isdigit()) or int(row_id) > 2**63 - 1:
        raise ValueError("malformed")
    try:
        at = _EPOCH + timedelta(microseconds=int(micros))
    except OverflowError as err:
        raise ValueError("malformed") from err
    return Position(at, parts[2], int(row_id))


@dataclass(frozen=True)
class TimelinePage:
    """Items (API-shaped dicts, newest first) and the next page's cursor (None at the end)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def _after(at: Any, row_id: Any, source: str, cursor: Position | None) -> ColumnElement[bool]:
    """Rows of `source` strictly after `cursor` in (at, source, id) descending order."""
    if cursor is None:
        return and_(True)
    if source < cursor.source:
        return at <= cursor.at
    if source > cursor.source:
        return at < cursor.at
    return or_(at < cursor.at, and_(at == cursor.at, row_id < cursor.id))


def _newest(
    stmt: Any, model: Any, at: Any, source: str, user: int, cursor: Position | None, limit: int
) -> Any:
    """`stmt` narrowed to the user's rows of `model` after `cursor`, newest first (by `at`)."""
    return (
        stmt.where(model.user_id == user, _after(at, model.id, source, cursor))
        .order_by(at.desc(), model.id.desc())
        .limit(limit)
    )


# A source: (name, kind, loader(session, user_pk, cursor, limit) -> [(Position, item)]).
Loader = Callable[[Session, int, Position | None, int], list[tuple[Position, dict[str, Any]]]]


def _events(session: Session, user: int, cursor: Position | None, limit: int) -> list:
    rows = session.scalars(
        _newest(select(Event), Event, Event.timestamp, "event", user, cursor, limit)
    )
    return [
        (
            Position(e.timestamp, "event", e.id),
            {
                "at": e.timestamp,
                "kind": "event",
                "id": e.id,
                "name": e.name,
                "properties": e.properties or {},
                "source": e.source,
            },
        )
        for e in rows
    ]


def _audiences(session: Session, user: int, cursor: Position | None, limit: int) -> list:
    stmt = select(AudienceChange, Audience.name).join(
        Audience, Audience.id == AudienceChange.audience_id
    )
    rows = session.execute(
        _newest(stmt, AudienceChange, AudienceChange.at, "audience", user, cursor, limit)
    ).tuples()
    return [
        (
            Position(c.at, "audience", c.id),
            {
                "at": c.at,
                "kind": "audience",
                "audienceId": c.audience_id,
                "audience": name,
                "change": c.kind,
                "cause": c.cause,
            },
        )
        for c, name in rows
    ]


def _rules(session: Session, user: int, cursor: Position | None, limit: int) -> list:
    stmt = select(RuleFiring, Rule.name).join(Rule, Rule.id == RuleFiring.rule_id)
    rows = session.execute(
        _newest(stmt, RuleFiring, RuleFiring.at, "rule", user, cursor, limit)
    ).tuples()
    return [
        (
            Position(f.at, "rule", f.id),
            {
                "at": f.at,
                "kind": "rule",
                "ruleId": f.rule_id,
                "rule": name,
                "status": f.status,
                "reason": f.reason,
                "cause": f.cause or {},
                "actions": f.actions or [],
                "depth": f.depth,
                "eventId": f.event_id,
            },
        )
        for f, name in rows
    ]


def _messages(session: Session, user: int, cursor: Position | None, limit: int) -> list:
    stmt = select(Message, Send.campaign_id).outerjoin(Send, Send.id == Message.send_id)
    rows = session.execute(
        _newest(stmt, Message, Message.created_at, "message", user, cursor, limit)
    ).tuples()
    return [
        (
            Position(m.created_at, "message", m.id),
            {
                "at": m.created_at,
                "kind": "message",
                "id": m.id,
                "channel": m.channel,
                "status": m.status,
                "reason": m.reason,
                "campaignId": campaign_id,
                "sendId": m.send_id,
                "history": [{"status": "queued", "reason": None, "at": m.created_at}],
            },
        )
        for m, campaign_id in rows
    ]


def _skips(session: Session, user: int, cursor: Position | None, limit: int) -> list:
    rows = session.scalars(
        _newest(select(SendSkip), SendSkip, SendSkip.at, "skip", user, cursor, limit)
    )
    return [
        (
            Position(s.at, "skip", s.id),
            {
                "at": s.at,
                "kind": "skip",
                "campaignId": s.campaign_id,
                "sendId": s.send_id,
                "channel": s.channel,
                "reason": s.reason,
                "detail": s.detail,
            },
        )
        for s in rows
    ]


def _holdouts(session: Session, user: int, cursor: Position | None, limit: int) -> list:
    stmt = select(CampaignHoldout, Campaign.name).join(
        Campaign, Campaign.id == CampaignHoldout.campaign_id
    )
    rows = session.execute(
        _newest(stmt, CampaignHoldout, CampaignHoldout.at, "holdout", user, cursor, limit)
    ).tuples()
    return [
        (
            Position(h.at, "holdout", h.id),
            {
                "at": h.at,
                "kind": "skip",
                "campaignId": h.campaign_id,
                "sendId": None,
                "channel": None,
                "reason": "holdout",
                "detail": f"in the holdout of campaign {name!r}: it is sent nothing",
            },
        )
        for h, name in rows
    ]


def _journeys(session: Session, user: int, cursor: Position | None, limit: int) -> list:
    stmt = (
        select(JourneyStepLog, Journey.name, JourneyRun.status, JourneyRun.exit_reason)
        .join(Journey, Journey.id == JourneyStepLog.journey_id)
        .join(JourneyRun, JourneyRun.id == JourneyStepLog.run_id)
    )
    rows = session.execute(
        _newest(stmt, JourneyStepLog, JourneyStepLog.entered_at, "journey", user, cursor, limit)
    ).tuples()
    return [
        (
            Position(s.entered_at, "journey", s.id),
            {
                "at": s.entered_at,
                "kind": "journey",
                "journeyId": s.journey_id,
                "journey": name,
                "runId": s.run_id,
                "step": s.step,
                "visit": s.visit,
                "outcome": s.outcome,
                "leftAt": s.left_at,
                "runStatus": status,
                "exitReason": exit_reason,
            },
        )
        for s, name, status, exit_reason in rows
    ]


# Source name -> (kind, loader). Names are stored in cursors: never rename one.
_SOURCES: dict[str, tuple[str, Loader]] = {
    "event": ("event", _events),
    "audience": ("audience", _audiences),
    "rule": ("rule", _rules),
    "journey": ("journey", _journeys),
    "message": ("message", _messages),
    "skip": ("skip", _skips),
    "holdout": ("skip", _holdouts),
}
# The source names a cursor may carry.
SOURCES = frozenset(_SOURCES)


def _add_history(session: Session, items: Iterable[dict[str, Any]]) -> None:
    """Fill the status history of the page's messages (one query for the page)."""
    by_id = {item["id"]: item for item in items if item["kind"] == "message"}
    if not by_id:
        return
    changes = session.scalars(
        select(MessageStatusChange)
        .where(MessageStatusChange.message_id.in_(list(by_id)))
        .order_by(MessageStatusChange.id)
    )
    for change in changes:
        by_id[change.message_id]["history"].append(
            {"status": change.status, "reason": change.reason, "at": change.at}
        )


def user_timeline(
    session: Session,
    *,
    user_pk: int,
    limit: int,
    cursor: Position | None = None,
    kinds: Iterable[str] | None = None,
) -> TimelinePage:
    """One page of a user's timeline, newest first, optionally only some `kinds`."""
    wanted = set(kinds) if kinds is not None else set(KINDS)
    merged: list[tuple[Position, dict[str, Any]]] = []
    for kind, load in _SOURCES.values():
        if kind in wanted:
            # One more than a page: if any source has it, there is a next page.
            merged += load(session, user_pk, cursor, limit + 1)
    merged.sort(key=lambda pair: pair[0], reverse=True)
    page = merged[:limit]
    items = [item for _, item in page]
    _add_history(session, items)
    next_cursor = encode_cursor(page[-1][0]) if len(merged) > limit else None
    return TimelinePage(items, next_cursor)
