"""Events whose processing job was lost (broker down at commit, a dropped message) are enqueued
again once they have waited longer than `EVENT_PENDING_SECONDS` (10 s by default), and again
every `EVENT_REQUEUE_SECONDS` (60 s) after that while still unprocessed.

`events.enqueued_at` records each re-enqueue: behind a backlog (events waiting longer than the
delay because the workers are busy, not because a job was lost) each event is enqueued again at
most once a minute, instead of once per sweep, which would flood the queue with no-op jobs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from app.db import defer, ids_in
from app.models import Event

NAME = "pending_events"
BATCH = 2000
JOB_SIZE = 200
DEFAULT_DELAY_SECONDS = 10.0
DEFAULT_REQUEUE_SECONDS = 60.0


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Enqueue up to BATCH events left unprocessed for longer than the delay."""
    delay = timedelta(seconds=float(settings.get("EVENT_PENDING_SECONDS", DEFAULT_DELAY_SECONDS)))
    again = timedelta(seconds=float(settings.get("EVENT_REQUEUE_SECONDS", DEFAULT_REQUEUE_SECONDS)))
    # `processed_at IS NULL` in id order is the partial index ix_events_pending.
    stmt = (
        select(Event.id)
        .where(
            Event.processed_at.is_(None),
            or_(
                and_(Event.enqueued_at.is_(None), Event.received_at < now - delay),
                Event.enqueued_at < now - again,
            ),
        )
        .order_by(Event.id)
        .limit(BATCH)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Rows an event processor holds (it is processing them) are skipped, not waited for:
        # it locks its users' events in (user, id) order, this sweep in id order, and the
        # two orders deadlocked under a backlog (bench/trigger.py).
        stmt = stmt.with_for_update(skip_locked=True)
    ids = list(session.scalars(stmt))
    if ids:
        session.execute(
            update(Event).where(ids_in(session, Event.id, ids)).values(enqueued_at=now),
            execution_options={"synchronize_session": False},
        )
    for start in range(0, len(ids), JOB_SIZE):
        defer(session, "process_events", ids[start : start + JOB_SIZE])
    return len(ids)
