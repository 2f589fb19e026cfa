"""Fan a segment or broadcast send out into message rows, in chunks, resumably."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, literal, not_, or_, select, text
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.models import Campaign, CampaignHoldout, User
from app.models.base import UTCDateTime, utcnow
from app.models.message import Send
from app.services.outbox import FANOUT_LEASE, enqueue_delivery, insert_for_users
from journeys.campaigns import HOLDOUT_CAMPAIGN_FACTOR, HOLDOUT_MODULUS, HOLDOUT_USER_FACTOR
from workers.channels import CHANNELS

log = logging.getLogger(__name__)

# Users per fan-out transaction: one chunk is one commit and one lease renewal.
CHUNK = 5000


def fan_out(session: Session, send_id: int) -> int:
    """Create this send's next chunks of messages; returns how many rows were created."""
    created_total = 0
    while True:
        now = utcnow()
        # populate_existing: job sessions keep objects across commits, and a pause (another
        # transaction) must be seen before the next chunk.
        send = session.get(
            Send,
            send_id,
            with_for_update=session.get_bind().dialect.name == "postgresql",
            populate_existing=True,
        )
        if send is None or send.status != "fanning_out":
            session.rollback()
            return created_total
        where = _audience(session, send, now)
        upper = session.scalar(
            select(User.id)
            .where(where, User.id > send.cursor)
            .order_by(User.id)
            .offset(CHUNK - 1)
            .limit(1)
        )
        bound = (
            User.id > send.cursor
            if upper is None
            else and_(User.id > send.cursor, User.id <= upper)
        )
        ids: list[int] = []
        candidates = 0
        users = User.__table__
        reach = and_(where, bound)
        holdout = _holdout_clause(session, send)
        if holdout is not None:
            held_out = _record_holdout(session, send, and_(reach, holdout), now)
            if held_out:
                skipped = dict(send.skipped or {})
                skipped["holdout"] = skipped.get("holdout", 0) + held_out
                send.skipped = skipped
            reach = and_(reach, not_(holdout))
        offset = send.recipients
        for name in send.channels:
            # One row per address: per user, or per device on push (a join).
            source = CHANNELS[name].fanout_source(users)
            chosen = and_(reach, source.where)
            candidates += (
                session.scalar(select(func.count()).select_from(source.from_).where(chosen)) or 0
            )
            ids += insert_for_users(
                session,
                send,
                channel=name,
                address=source.address,
                where=chosen,
                now=now,
                from_=source.from_,
            )
        send.recipients += len(ids)
        send.deduplicated += candidates - len(ids)
        if upper is None:
            send.status = "done"
            send.finished_at = now
            send.lease_until = None
        else:
            send.cursor = upper
            send.lease_until = now + FANOUT_LEASE
        if send.rate_per_minute and ids:
            # Spread: the delivery sweep (due_messages) enqueues each when its time comes.
            base, position = _spread_start(session, send, offset, now)
            spread(session, send, base=base, offset=position, min_id=min(ids))
        else:
            enqueue_delivery(session, ids)
        session.commit()
        created_total += len(ids)
        if upper is None:
            return created_total


def _audience(session: Session, send: Send, now: datetime) -> Any:
    """Identified users of the project, narrowed by the send's segment if it has one."""
    from app.services.segments import members_clause
    from journeys.filters import parse_filter

    target = send.target or {}
    cond = parse_filter(target.get("segment") or {"all": []})
    where = members_clause(
        cond, project_id=send.project_id, dialect_name=session.get_bind().dialect.name, now=now
    )
    # A local-time campaign run (workers.campaign_schedule.start_run) covers one zone's users;
    # the fallback zone's run also covers users whose zone is NULL, unknown or has no run of
    # its own (`otherZones` = the zones that have one).
    if "zone" in target:
        if "otherZones" in target:
            others = [z for z in target["otherZones"] if z != target["zone"]]
            where = and_(
                where,
                or_(User.timezone.is_(None), User.timezone.not_in(others))
                if others
                else literal(True),
            )
        else:
            where = and_(where, User.timezone == target["zone"])
    return where


def holdout_bucket_sql(campaign_id: int) -> Any:
    """journeys.campaigns.holdout_bucket in SQL over users.id (integer arithmetic, 0..99)."""
    return (
        (User.id % HOLDOUT_MODULUS) * HOLDOUT_USER_FACTOR + campaign_id * HOLDOUT_CAMPAIGN_FACTOR
    ) % 100


def _holdout_clause(session: Session, send: Send) -> Any:
    """Users in the campaign's holdout slice (they get nothing), or None."""
    if send.campaign_id is None:
        return None
    percent = session.scalar(
        select(Campaign.holdout_percent).where(Campaign.id == send.campaign_id)
    )
    if not percent:
        return None
    return holdout_bucket_sql(send.campaign_id) < int(percent)


def _record_holdout(session: Session, send: Send, where: Any, now: datetime) -> int:
    """Insert the chunk's holdout members (once per campaign); how many this send skipped."""
    count = session.scalar(select(func.count()).select_from(User).where(where)) or 0
    if count:
        source = select(
            literal(send.project_id),
            literal(send.campaign_id),
            User.id,
            literal(now, type_=UTCDateTime()),
        ).where(where)
        session.execute(
            insert_ignore(session, CampaignHoldout, ["campaign_id", "user_id"]).from_select(
                ["project_id", "campaign_id", "user_id", "at"], source
            )
        )
    return int(count)


def _share(session: Session, send: Send) -> int:
    """How many sends split the campaign's rate (one per template of the same run)."""
    if send.run_id is None:
        return 1
    return int(session.scalar(select(func.count()).where(Send.run_id == send.run_id)) or 1)


# A chunk this close to its planned slot keeps the schedule (the first chunk starts a moment after
# the send row is created; restarting from "now" would shift a second boundary between chunks).
SPREAD_GRACE = timedelta(seconds=10)


def _spread_start(session: Session, send: Send, offset: int, now: datetime) -> tuple[datetime, int]:
    """(base, position): continue the send's schedule, or restart it from now if it is late."""
    rate = int(send.rate_per_minute or 1)
    base = send.created_at.replace(microsecond=0)
    planned = base + timedelta(seconds=offset * 60 * _share(session, send) // rate)
    if planned >= now - SPREAD_GRACE:
        return base, offset
    return now.replace(microsecond=0), 0


def spread(
    session: Session,
    send: Send,
    *,
    base: datetime,
    offset: int,
    min_id: int | None = None,
    held_only: bool = False,
) -> int:
    """Give the send's queued messages not_before slots of its rate; how many rows.

    Position p (in message id order, from `offset`) waits until base + p*60/rate seconds
    (whole seconds), so any minute holds at most `rate_per_minute` of the campaign's messages
    (split between the sends of one run). One UPDATE ... FROM over a window function; only
    rate-limited sends pay for it. enqueued_at is cleared: the due-message sweep enqueues each
    row once its slot comes (it waits without using a retry).
    """
    from workers.campaign_schedule import HELD

    rate = int(send.rate_per_minute or 0)
    if rate <= 0:
        return 0
    conditions = ["send_id = :send_id", "status = 'queued'"]
    params: dict[str, Any] = {
        "send_id": send.id,
        "offset": offset,
        "share": _share(session, send),
        "rate": rate,
    }
    binds = []
    if min_id is not None:
        conditions.append("id >= :min_id")
        params["min_id"] = min_id
    if held_only:
        conditions.append("not_before = :held")
        params["held"] = HELD
        binds.append(bindparam("held", type_=UTCDateTime()))
    ranked = (
        "SELECT id, row_number() OVER (ORDER BY id) - 1 AS pos FROM messages WHERE "
        + " AND ".join(conditions)
    )
    seconds = "((:offset + r.pos) * 60 * :share / :rate)"
    base = base.astimezone(UTC).replace(microsecond=0)
    if session.get_bind().dialect.name == "postgresql":
        sql = (
            "UPDATE messages AS m SET not_before = CAST(:base AS timestamptz) + "
            f"{seconds} * interval '1 second', enqueued_at = NULL, reason = NULL "
            f"FROM ({ranked}) AS r WHERE m.id = r.id"
        )
        params["base"] = base
    else:
        # SQLAlchemy stores SQLite timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC).
        sql = (
            "UPDATE messages SET not_before = strftime('%Y-%m-%d %H:%M:%S', :base, '+' || "
            f"{seconds} || ' seconds') || '.000000', enqueued_at = NULL, reason = NULL "
            f"FROM ({ranked}) AS r WHERE messages.id = r.id"
        )
        params["base"] = base.strftime("%Y-%m-%d %H:%M:%S")
    result = session.execute(text(sql).bindparams(*binds), params)
    return int(getattr(result, "rowcount", 0) or 0)
