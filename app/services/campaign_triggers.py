"""Triggered campaigns and the rule action `sendCampaign`, for one user (being built).

Called by the event processor (workers.events) after the rules of an event have run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Event, Project, User


def on_event(
    session: Session, *, project: Project, user: User | None, event: Event, now: datetime
) -> list[dict[str, Any]]:
    """Start every active triggered campaign whose trigger matches this event, for its user.

    Returns one entry per matching campaign: {"campaign": id, "result": "queued" | "skipped",
    "reason"?: ..., "messageIds": [...]}.
    """
    return []


def send_campaign_to_user(
    session: Session,
    *,
    project: Project,
    campaign_id: int,
    user: User,
    params: dict[str, Any],
    cause: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The rule action `sendCampaign`: this campaign's messages to this user, now.

    Returns {"result": "queued" | "skipped", "reason"?: ..., "messageIds": [...]}.
    """
    return {"result": "skipped", "reason": "not built yet", "messageIds": []}
