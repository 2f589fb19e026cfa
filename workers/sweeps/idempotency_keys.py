"""`Idempotency-Key` rows older than their 24 hours are deleted."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.services.idempotency import sweep_expired

NAME = "idempotency_keys"
BATCH = 5000


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Delete up to BATCH expired keys (an expired key is already free: this only reclaims)."""
    return sweep_expired(session, now=now, batch=BATCH)
