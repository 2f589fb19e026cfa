"""The `api` campaign kind (being built)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Campaign

NAME = "api"


def check(fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """Kind-specific errors by field path."""
    return {}


def activate(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Start it; warnings."""
    return []


def pause(session: Session, campaign: Campaign, now: datetime) -> None:
    """Stop sending."""


def resume(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Continue after a pause."""
    return []


def archive(session: Session, campaign: Campaign, now: datetime) -> None:
    """End for good."""
