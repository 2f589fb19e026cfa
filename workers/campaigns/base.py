"""What a campaign kind provides (one module per kind, registered in `workers.campaigns`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from app.models import Campaign


class CampaignKind(Protocol):
    """A campaign kind: its own checks and what activate, pause, resume and archive do."""

    NAME: str

    def check(self, fields: Mapping[str, Any]) -> dict[str, list[str]]:
        """Kind-specific errors by field path (`schedule.cron`, `trigger.event`), on save."""
        ...

    def activate(self, session: Session, campaign: Campaign, now: datetime) -> list[str]:
        """Start it (schedule its runs...); returns warnings for the activate response."""
        ...

    def pause(self, session: Session, campaign: Campaign, now: datetime) -> None:
        """Stop it sending anything more (what waits keeps waiting)."""
        ...

    def resume(self, session: Session, campaign: Campaign, now: datetime) -> list[str]:
        """Continue after a pause: nothing sent is sent again, TTLs apply to what waited."""
        ...

    def archive(self, session: Session, campaign: Campaign, now: datetime) -> None:
        """End it for good: cancel what is scheduled."""
        ...
