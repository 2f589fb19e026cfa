"""What a browser's service worker reports about a push: it was shown (`delivered`).

A push service's 201 only says it took the message; the worker's report says the browser
showed it. Recorded once per message (`MessageEvent` delivered) and the message moves from
`sent` to `delivered`, never backwards (a click that came first keeps `clicked`). Functions
flush, never commit: the caller owns the session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.models.channels import MessageEvent
from app.models.message import Message, MessageStatusChange

CHANNEL = "push"


def record_delivered(session: Session, *, project_id: int, message_id: int, now: datetime) -> bool:
    """Record that the browser showed push message `message_id`; True if this call did.

    A message of another project or channel is ignored (False), like one reported twice.
    """
    message = session.get(Message, message_id)
    if message is None or message.project_id != project_id or message.channel != CHANNEL:
        return False
    recorded = session.execute(
        insert_ignore(session, MessageEvent, ["message_id", "kind"])
        .values(project_id=project_id, message_id=message_id, kind="delivered", at=now)
        .returning(MessageEvent.id)
    ).all()
    moved = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == "sent")
        .values(status="delivered", updated_at=now)
        .returning(Message.id)
    ).all()
    if moved:
        session.add(MessageStatusChange(message_id=message_id, status="delivered", at=now))
    session.flush()
    return bool(recorded)
