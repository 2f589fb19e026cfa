"""The sweeper's tasks: one module each, run in order, one batch per call.

Each task module has `NAME` (its count in `SweepStats`), `BATCH` (rows per call) and
`run(session, now, settings) -> int` (how many rows it handled; it flushes, the sweeper
commits after each task so every transaction stays short). A new periodic duty (journey
timers, campaign schedules, retention) = one module + one line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from workers.sweeps import (
    audience_ttl,
    campaign_runs,
    dead_claims,
    due_messages,
    expiries,
    idempotency_keys,
    journey_wakes,
    pending_events,
    stalled_fanouts,
)


class SweepTask(Protocol):
    """A sweep task module."""

    NAME: str
    BATCH: int

    def run(self, session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
        """Handle one batch; how many rows."""
        ...


# Order matters: expire what is too late before recovering claims and enqueueing what is due.
TASKS: tuple[SweepTask, ...] = (
    expiries,
    dead_claims,
    due_messages,
    stalled_fanouts,
    campaign_runs,
    audience_ttl,
    pending_events,
    journey_wakes,
    idempotency_keys,
)
