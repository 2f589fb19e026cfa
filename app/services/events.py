"""Event ingestion: validate, resolve users, store once per messageId, answer counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, literal, text, update
from sqlalchemy.orm import Session

from app.db import defer, insert_ignore
from app.errors import InvalidInput, TooLarge
from app.models import Event, User
from app.models.base import UTCDateTime, utcnow
from app.services.profiles import ensure_anonymous_ids, ensure_user_ids, integer_text

MAX_NAME = 255
MAX_ID = 255
# `userHash` proves userId (identity verification, checked by the caller); it is not stored.
EVENT_FIELDS = frozenset(
    {"name", "userId", "anonymousId", "properties", "timestamp", "messageId", "userHash"}
)


@dataclass(frozen=True)
class Limits:
    """Per-event limits taken from the configuration."""

    max_event_bytes: int = 32 * 1024
    max_future: timedelta = timedelta(hours=24)
    max_past: timedelta = timedelta(days=5 * 365)


@dataclass
class EventIn:
    """One validated event, ready to store."""

    name: str
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any]
    timestamp: datetime
    message_id: str | None
    source: str = "api"


@dataclass
class TrackResult:
    """What happened to a batch: stored, already seen, rejected (with errors by index)."""

    accepted: int = 0
    duplicates: int = 0
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    # The stored events' ids, in request order (the processing job carries them).
    event_ids: list[int] = field(default_factory=list)


def parse_timestamp(raw: Any, now: datetime, limits: Limits) -> datetime:
    """ISO 8601 (naive = UTC) within the allowed skew; raises ValueError with the reason."""
    if not isinstance(raw, str):
        raise ValueError("must be an ISO 8601 string")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError("not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value > now + limits.max_future:
        raise ValueError("too far in the future")
    if value < now - limits.max_past:
        raise ValueError("too far in the past")
    return value


# Cairn's own events (delivery outcomes: app.services.outcome_events) carry message ids under
# this prefix, so a client's id can never block one of them.
RESERVED_MESSAGE_ID_PREFIX = "cairn:"
RESERVED_MESSAGE_ID_ERROR = "must not start with cairn: (reserved for Cairn's own events)"
RESERVED_MESSAGE_ID_PATTERN = "^(?!cairn:)"


def parse_event(item: Any, now: datetime, limits: Limits, *, check_size: bool) -> EventIn:
    """Validate one event object by hand (this is the hot path); InvalidInput names fields."""
    if not isinstance(item, dict):
        raise InvalidInput("expected an object", {"_schema": ["expected an object"]})
    errors: dict[str, list[str]] = {}
    name = item.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        errors["name"] = ["required, a string of 1-255 characters"]
    ids: dict[str, str | None] = {}
    for key in ("userId", "anonymousId", "messageId"):
        value = item.get(key)
        if value is None:
            ids[key] = None
        elif isinstance(value, str) and value and len(value) <= MAX_ID:
            if key != "messageId" and value.isspace():
                errors[key] = ["must not be blank"]  # as on /v1/users: no blank user ids
                continue
            if key == "messageId" and value.startswith(RESERVED_MESSAGE_ID_PREFIX):
                errors[key] = [RESERVED_MESSAGE_ID_ERROR]
                continue
            ids[key] = value
        elif (
            key != "messageId"
            and (text_id := integer_text(value)) is not None
            and len(text_id) <= MAX_ID
        ):
            ids[key] = text_id  # numeric ids are common in backends; store their text
        else:
            errors[key] = ["must be a string of 1-255 characters"]
    properties = item.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        errors["properties"] = ["must be an object"]
    ts = now
    if item.get("timestamp") is not None:
        try:
            ts = parse_timestamp(item["timestamp"], now, limits)
        except ValueError as err:
            errors["timestamp"] = [str(err)]
    if len(item) > len(EVENT_FIELDS) or not EVENT_FIELDS.issuperset(item):
        for key in sorted(set(item) - EVENT_FIELDS):
            errors[key] = ["unknown field"]
    if check_size and not errors:
        size = len(json.dumps(item, separators=(",", ":")).encode())
        if size > limits.max_event_bytes:
            message = f"event is {size} bytes, over the {limits.max_event_bytes} limit"
            raise TooLarge(message, {"_schema": [message]})
    if errors:
        raise InvalidInput("Invalid event: " + ", ".join(sorted(errors)), errors)
    return EventIn(
        name=name,  # type: ignore[arg-type]
        user_id=ids["userId"],
        anonymous_id=ids["anonymousId"],
        properties=properties,
        timestamp=ts,
        message_id=ids["messageId"],
    )


@dataclass
class ParsedBatch:
    """A validated batch: good events with their index, errors by index, oversize indexes."""

    good: list[tuple[int, EventIn]] = field(default_factory=list)
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    oversize: set[int] = field(default_factory=set)

    @property
    def events(self) -> list[EventIn]:
        """The valid events, in request order."""
        return [event for _, event in self.good]


def parse_events(items: Sequence[Any], *, limits: Limits, check_size: bool) -> ParsedBatch:
    """Validate a batch; one bad item does not reject the others."""
    now = utcnow()
    batch = ParsedBatch()
    for index, item in enumerate(items):
        try:
            batch.good.append((index, parse_event(item, now, limits, check_size=check_size)))
        except TooLarge as err:
            batch.errors[index] = err.errors
            batch.oversize.add(index)
        except InvalidInput as err:
            batch.errors[index] = err.errors
    return batch


def track_events(session: Session, *, project_id: int, events: Sequence[EventIn]) -> TrackResult:
    """Store events (one row each, a messageId at most once per project) and create users."""
    result = TrackResult()
    if not events:
        return result
    now = utcnow()
    # Within one batch a repeated messageId is a duplicate too.
    seen: set[str] = set()
    unique: list[EventIn] = []
    for ev in events:
        if ev.message_id is not None:
            if ev.message_id in seen:
                result.duplicates += 1
                continue
            seen.add(ev.message_id)
        unique.append(ev)
    postgres = session.get_bind().dialect.name == "postgresql"
    newest: dict[str, datetime] = {}
    for ev in unique:
        if ev.user_id is not None and (
            ev.user_id not in newest or ev.timestamp > newest[ev.user_id]
        ):
            newest[ev.user_id] = ev.timestamp
    if postgres:
        user_rows = upsert_seen_users_pg(session, project_id, newest, now)
    else:
        user_rows = ensure_user_ids(session, project_id, list(newest), now)
    anon = [e.anonymous_id for e in unique if e.user_id is None and e.anonymous_id is not None]
    anon_rows = ensure_anonymous_ids(session, project_id, anon, now) if anon else {}
    last_seen: dict[int, datetime] = {}
    user_pks: list[int | None] = []
    for ev in unique:
        uid: int | None = None
        if ev.user_id is not None:
            uid = user_rows[ev.user_id]
        elif ev.anonymous_id is not None:
            uid = anon_rows[ev.anonymous_id]
            if uid not in last_seen or ev.timestamp > last_seen[uid]:
                last_seen[uid] = ev.timestamp
        user_pks.append(uid)
    if not postgres:
        for ext, ts in newest.items():
            last_seen[user_rows[ext]] = ts
    if postgres:
        ids = _insert_events_pg(session, project_id, unique, user_pks, now)
    else:
        rows = [
            {
                "project_id": project_id,
                "user_id": uid,
                "name": ev.name,
                "properties": ev.properties,
                "message_id": ev.message_id,
                "source": ev.source,
                "timestamp": ev.timestamp,
                "received_at": now,
                "erased": False,
            }
            for ev, uid in zip(unique, user_pks, strict=True)
        ]
        # One statement keeps ids in request order; ON CONFLICT only fires for a messageId
        # seen before (NULLs never conflict), and those rows are not returned.
        stmt = insert_ignore(session, Event, ["project_id", "message_id"]).returning(Event.id)
        ids = list(session.scalars(stmt, rows))
    result.accepted += len(ids)
    result.duplicates += len(unique) - len(ids)
    result.event_ids = ids
    _touch_last_seen(session, last_seen)
    if ids:
        # Rules, triggered campaigns and goals run once the events are committed (workers.events);
        # the writer's group sessions commit too, so this holds for them (one job per batch).
        defer(session, "process_events", ids)
    return result


# PostgreSQL fast path: whole batches as arrays, so the statement text is constant (psycopg
# prepares it once) and one round trip handles a thousand rows.
_UPSERT_SEEN = text(
    """
    INSERT INTO users (project_id, external_id, attributes, created_at, updated_at, last_seen_at)
    SELECT :project_id, x.ext, '{}'::jsonb, :now, :now, x.ts
    FROM unnest(CAST(:exts AS text[]), CAST(:tss AS timestamptz[])) AS x(ext, ts)
    ORDER BY x.ext
    ON CONFLICT (project_id, external_id) DO UPDATE
    SET last_seen_at = GREATEST(users.last_seen_at, EXCLUDED.last_seen_at)
    RETURNING external_id, id
    """
)
_INSERT_EVENTS = text(
    """
    INSERT INTO events (project_id, user_id, name, properties, message_id, source, timestamp,
                        received_at, erased)
    SELECT :project_id, x.uid, x.name, CAST(x.props AS jsonb), x.mid, x.src, x.ts, :now, false
    FROM unnest(CAST(:uids AS bigint[]), CAST(:names AS text[]), CAST(:props AS text[]),
                CAST(:mids AS text[]), CAST(:srcs AS text[]), CAST(:tss AS timestamptz[]))
         WITH ORDINALITY AS x(uid, name, props, mid, src, ts, ord)
    ORDER BY x.ord
    ON CONFLICT (project_id, message_id) DO NOTHING
    RETURNING id
    """
)


def upsert_seen_users_pg(
    session: Session, project_id: int, newest: dict[str, datetime], now: datetime
) -> dict[str, int]:
    """Create missing users and move lastSeenAt forward in one statement; ids by userId.

    Rows are locked in userId order, so concurrent batches cannot deadlock on each other.
    """
    if not newest:
        return {}
    rows = session.execute(
        _UPSERT_SEEN,
        {"project_id": project_id, "now": now, "exts": list(newest), "tss": list(newest.values())},
    )
    return {ext: uid for ext, uid in rows}


def _insert_events_pg(
    session: Session,
    project_id: int,
    events: Sequence[EventIn],
    user_pks: Sequence[int | None],
    now: datetime,
) -> list[int]:
    rows = session.execute(
        _INSERT_EVENTS,
        {
            "project_id": project_id,
            "now": now,
            "uids": list(user_pks),
            "names": [e.name for e in events],
            "props": [json.dumps(e.properties, separators=(",", ":")) for e in events],
            "mids": [e.message_id for e in events],
            "srcs": [e.source for e in events],
            "tss": [e.timestamp for e in events],
        },
    )
    return list(rows.scalars())


def _touch_last_seen(session: Session, last_seen: dict[int, datetime]) -> None:
    """Move lastSeenAt forward for the users in a batch, in one statement per 500 users."""
    items = list(last_seen.items())
    for start in range(0, len(items), 500):
        chunk = dict(items[start : start + 500])
        newest = case(*[(User.id == uid, literal(ts, UTCDateTime())) for uid, ts in chunk.items()])
        session.execute(
            update(User)
            .where(User.id.in_(list(chunk)))
            .where((User.last_seen_at.is_(None)) | (User.last_seen_at < newest))
            .values(last_seen_at=newest),
            execution_options={"synchronize_session": False},
        )
