"""Fan-outs whose lease ran out (their worker died) are handed out again."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import defer
from app.models.message import Send
from app.services.outbox import FANOUT_LEASE

NAME = "sends"
BATCH = 100


def run(session: Session, now: datetime, settings: Mapping[str, Any]) -> int:
    """Re-enqueue up to BATCH stalled fan-outs."""
    ids = list(
        session.scalars(
            select(Send.id)
            .where(
                Send.status == "fanning_out",
                (Send.lease_until.is_(None)) | (Send.lease_until < now),
            )
            .limit(BATCH)
        )
    )
    if ids:
        session.execute(update(Send).where(Send.id.in_(ids)).values(lease_until=now + FANOUT_LEASE))
        for send_id in ids:
            defer(session, "fan_out_send", send_id)
    return len(ids)
