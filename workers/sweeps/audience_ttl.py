"""Audience memberships whose TTL passed become recorded leaves (cause `ttl`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.services.audiences import expire_memberships

NAME = "memberships"
BATCH = 5000


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Expire up to BATCH memberships."""
    return expire_memberships(session, now, limit=BATCH)
