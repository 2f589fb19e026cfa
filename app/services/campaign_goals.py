"""Campaign goals: attribute a conversion event to the campaign that preceded it (being built).

Called by the event processor (workers.events) for every user event.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.models import Event, Project, User


def on_event(session: Session, *, project: Project, user: User, event: Event, now: datetime) -> int:
    """Record the conversions this event is for campaigns with a matching goal; how many."""
    return 0
