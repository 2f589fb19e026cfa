"""What a browser's service worker reports about a push: it was shown (`delivered`).

A push service's 201 only says it took the message; the worker's report says the browser
showed it. Recorded once per message (`MessageEvent` delivered) and the message moves from
`sent` to `delivered`, never backwards (a click that came first keeps `clicked`). Functions
flush, never commit: the caller owns the session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.models.message import Message
from app.services.outbox import advance, record_event

CHANNEL = "push"


def record_delivered(session: Session, *, project_id: int, message_id: int, now: datetime) -> bool:
    """Record that the browser showed push message `message_id`; True if this call did.

    A message of another project or channel is ignored (False), like one reported twice.
    """
    message = session.get(Message, message_id)
    if message is None or message.project_id != project_id or message.channel != CHANNEL:
        return False
    recorded = record_event(session, message, "delivered", now)
    # The report is recorded even when the message already moved on (a click came first).
    advance(session, message, "delivered", at=now)
    session.flush()
    return recorded
