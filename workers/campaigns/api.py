"""The `api` campaign kind: the customer's backend sends it (POST /v1/campaigns/{id}/send).

Nothing is scheduled; `app.services.campaigns.send_api_campaign` refuses a campaign that is
not active, so activate, pause, resume and archive only change its status.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Campaign

NAME = "api"


def check(fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """No trigger and no schedule: the recipients come with each send request."""
    errors: dict[str, list[str]] = {}
    if fields.get("trigger"):
        errors["trigger"] = ["an api campaign has no trigger (use kind triggered)"]
    if fields.get("schedule"):
        errors["schedule"] = ["an api campaign has no schedule (use broadcast or recurring)"]
    return errors


def activate(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Sends are accepted from now on."""
    return []


def pause(session: Session, campaign: Campaign, now: datetime) -> None:
    """Sends are refused (409) until it is resumed."""


def resume(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Sends are accepted again."""
    return []


def archive(session: Session, campaign: Campaign, now: datetime) -> None:
    """Sends are refused for good."""
