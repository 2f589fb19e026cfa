"""Journey runs whose wait ended (a duration, a time of day, a timeout) are advanced.

`journey_runs.wake_at` is indexed; each call claims due runs of active journeys in wake order
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several sweepers never take the same run) and
advances them in batches of BATCH, committing each, for up to BUDGET_SECONDS: a backlog is
worked off at full speed instead of one batch a second, and the other sweep tasks still run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.services.journey_runs import advance_due

NAME = "journey_wakes"
BATCH = 1000
BUDGET_SECONDS = 0.8


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Advance due runs, batch after batch, while there are full batches and time left."""
    batch = int(settings.get("JOURNEY_WAKE_BATCH", BATCH))
    started = time.monotonic()
    total = 0
    while True:
        elapsed = time.monotonic() - started
        done = advance_due(session, now + timedelta(seconds=elapsed), limit=batch)
        total += done
        if done < batch or time.monotonic() - started > BUDGET_SECONDS:
            return total
