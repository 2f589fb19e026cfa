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
        """Kind-specific errors by field path (`schedule.cron`, `trigger.event`), on save.

        `fields` is the whole campaign as it would be stored after this save
        (`app.services.campaigns.campaign_fields`), in API names with normalized values:
        `channels` {channel: template id}, `target` {include, exclude} of filter trees or
        None, `trigger` {event, where?} or None, `schedule` the given keys without nulls
        (sendAt the text given, for the kind to read; timezone checked) or None,
        `window` {startsAt, endsAt} as aware datetimes or None, `ttlSeconds`, `urgency`,
        `category`, `topic`, `rateLimit` {perMinute} or None, `goal` {event, where?,
        valueField?, within: seconds} or None, `holdoutPercent`. Also run on activate.
        """
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

    # Optional (looked up with getattr, so a kind without it needs nothing):
    # `edited(session, campaign, now) -> None` runs after an accepted PATCH that changed a
    # field of an active or paused campaign (re-plan what the edit moved).
