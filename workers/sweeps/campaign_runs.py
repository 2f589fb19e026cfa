"""Scheduled campaign runs: start the due ones (or expire them), finish them, complete
campaigns that are over, and auto-pause campaigns whose sends fail past their threshold."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from workers import campaign_schedule

NAME = "campaign_runs"
BATCH = 50
# The failure-rate check groups a running send's messages: every few seconds is enough.
AUTO_PAUSE_EVERY_SECONDS = 10

_last_check = 0.0
_lock = threading.Lock()


def _auto_pause_due() -> bool:
    global _last_check
    with _lock:
        if time.monotonic() - _last_check < AUTO_PAUSE_EVERY_SECONDS:
            return False
        _last_check = time.monotonic()
        return True


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Handle up to BATCH due runs, then finish, complete and auto-pause; how many rows."""
    handled = campaign_schedule.start_due_runs(session, now, settings, limit=BATCH)
    handled += campaign_schedule.finish_runs(session, now)
    if _auto_pause_due():
        handled += campaign_schedule.auto_pause(session, now)
    handled += campaign_schedule.complete_campaigns(session, now)
    return handled
