"""Cancel pending messages: of a campaign, of the sends of one Idempotency-Key, or of one send.

Queued messages (not yet claimed by a delivery worker) become `cancelled` with a history row;
a message already `sending` is left to finish and counted as in flight. A fan-out still in
progress stops: its send becomes `cancelled`, which the fan-out job and the stalled-fan-out
sweep both skip (they only continue a send that is `fanning_out`). Cancelling does not pause
a campaign: new triggers or runs make new sends (pause the campaign for that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import Campaign
from app.models.message import Message, MessageStatusChange, Send
from app.services.named import find_named, id_problem

REASON = "cancelled by request"
# Sends whose fan-out has not finished: cancelling stops them.
_UNFINISHED = ("pending", "fanning_out")


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: messages cancelled, messages already being sent, fan-outs stopped."""

    cancelled: int
    in_flight: int
    fan_outs_stopped: int


def _sends(
    session: Session,
    project_id: int,
    *,
    campaign: str | int | None,
    idempotency_key: str | None,
    send_id: int | None,
) -> Select[tuple[int]]:
    """The chosen sends' ids, as a statement (a campaign may have thousands of sends)."""
    stmt = select(Send.id).where(Send.project_id == project_id)
    if campaign is not None:
        # An id no row can have (too many digits) is simply not found.
        row = (
            None
            if id_problem(campaign)
            else find_named(session, Campaign, project_id=project_id, ref=campaign)
        )
        if row is None:
            raise NotFound(f"campaign {campaign!r} not found", {"campaign": ["not found"]})
        return stmt.where(Send.campaign_id == row.id)
    if idempotency_key is not None:
        stmt = stmt.where(Send.idempotency_key == idempotency_key)
        missing = NotFound(
            f"no send carries Idempotency-Key {idempotency_key!r}",
            {"idempotencyKey": ["not found"]},
        )
    else:
        stmt = stmt.where(Send.id == send_id)
        missing = NotFound(f"send {send_id} not found", {"sendId": ["not found"]})
    if session.scalar(stmt.limit(1)) is None:
        raise missing
    return stmt


def cancel_pending(
    session: Session,
    *,
    project_id: int,
    now: datetime,
    campaign: str | int | None = None,
    idempotency_key: str | None = None,
    send_id: int | None = None,
) -> Cancelled:
    """Cancel the queued messages of the sends chosen by exactly one of the three keywords.

    An unknown campaign, key or send is NotFound. Flushes, never commits.
    """
    ids = _sends(
        session, project_id, campaign=campaign, idempotency_key=idempotency_key, send_id=send_id
    ).scalar_subquery()
    # The sends first: on PostgreSQL this waits for a fan-out chunk in progress (it holds the
    # send's row lock) to commit, so the update of messages below sees that chunk's rows, and
    # the next chunk finds the send cancelled. SQLite serialises the two transactions anyway.
    stopped = list(
        session.scalars(
            update(Send)
            .where(Send.id.in_(ids), Send.status.in_(_UNFINISHED))
            .values(status="cancelled", finished_at=now, lease_until=None)
            .returning(Send.id)
            .execution_options(synchronize_session=False)
        )
    )
    cancelled = list(
        session.scalars(
            update(Message)
            .where(Message.send_id.in_(ids), Message.status == "queued")
            .values(status="cancelled", reason=REASON, updated_at=now)
            .returning(Message.id)
            .execution_options(synchronize_session=False)
        )
    )
    if cancelled:
        session.execute(
            insert(MessageStatusChange),
            [
                {"message_id": i, "status": "cancelled", "reason": REASON, "at": now}
                for i in cancelled
            ],
        )
    in_flight = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(Message.send_id.in_(ids), Message.status == "sending")
    )
    return Cancelled(len(cancelled), in_flight or 0, len(stopped))
