"""The sweeper: every second, run each sweep task once (re-enqueue what is due and unclaimed,
expire what is too late, recover dead claims and stalled fan-outs, end memberships).

It is what makes a lost broker message or a crashed worker a delay instead of a loss. The tasks
live in `workers.sweeps`, one batch per call: a backlog larger than a batch is worked off over
the following sweeps instead of in one long transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from workers.sweeps import TASKS

log = logging.getLogger(__name__)


@dataclass
class SweepStats:
    """What one sweep did: rows per task name (`stats.expired`, `stats.enqueued`...)."""

    counts: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> int:
        if name.startswith("_") or name == "counts":
            raise AttributeError(name)
        return self.counts.get(name, 0)


def sweep(session: Session, now: datetime, settings: Mapping[str, Any]) -> SweepStats:
    """One pass; the caller owns the session, and each task's batch is committed on its own."""
    stats = SweepStats()
    for task in TASKS:
        try:
            stats.counts[task.NAME] = task.run(session, now, settings)
            session.commit()
        except Exception:  # one broken task must not starve the others
            session.rollback()
            log.exception("sweep task %s failed", task.NAME)
    if any(stats.counts.values()):
        log.info("sweep: %s", stats.counts)
    return stats
