"""The `triggered` campaign kind: an event (and its `where`) starts it, one user at a time.

Nothing is scheduled: `app.services.campaign_triggers.on_event` reads the active triggered
campaigns listening for each processed event, so activate, pause, resume and archive only
change the status the event processor reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Campaign

NAME = "triggered"


def check(fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """A trigger `{event, where?}` is required; a schedule belongs to other kinds."""
    errors: dict[str, list[str]] = {}
    if not fields.get("trigger"):
        errors["trigger"] = ["required for a triggered campaign: {event, where?}"]
    if fields.get("schedule"):
        errors["schedule"] = ["a triggered campaign has no schedule (use broadcast or recurring)"]
    return errors


def activate(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Nothing to schedule: events trigger it from now on."""
    return []


def pause(session: Session, campaign: Campaign, now: datetime) -> None:
    """Events stop triggering it (the status is what the event processor reads)."""


def resume(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Events trigger it again; events seen while paused are not replayed."""
    return []


def archive(session: Session, campaign: Campaign, now: datetime) -> None:
    """Events never trigger it again."""
