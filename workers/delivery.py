"""Deliver a batch of messages: claim, check (TTL, suppression, quiet hours, caps), send, record.

Each step that has a side effect outside the database first makes its claim durable, so a
redelivered job finds nothing to do and a crashed worker's claims are recovered by the sweeper.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.models import Project, User
from app.models.base import utcnow
from app.models.message import (
    REACHED,
    Message,
    MessageStatusChange,
    SandboxMessage,
    Send,
    Suppression,
)
from app.realtime import get_hub, stream_key
from journeys.quiet_hours import parse_hhmm, quiet_until
from workers.channels import (
    Delivery,
    ProviderContext,
    Retry,
    SendResult,
    get_provider,
    provider_for,
)
from workers.content import ContentBuilder, ContentError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 600.0


@dataclass
class Outcome:
    """The new state of one message after this job."""

    status: str
    reason: str | None = None
    provider: str | None = None
    provider_id: str | None = None
    rendered: dict[str, Any] | None = None
    not_before: datetime | None = None


@dataclass
class BatchStats:
    """What a batch did (for logs and benchmarks)."""

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


def backoff(attempt: int) -> timedelta:
    """Exponential backoff: 2 s, 4 s, 8 s... capped at 10 minutes."""
    return timedelta(seconds=min(BACKOFF_BASE_SECONDS * 2 ** (attempt - 1), BACKOFF_MAX_SECONDS))


def claim(session: Session, message_ids: Sequence[int], now: datetime) -> list[int]:
    """Move due `queued` messages to `sending` in one conditional UPDATE; committed at once."""
    if not message_ids:
        return []
    claimed = list(
        session.scalars(
            update(Message)
            .where(
                Message.id.in_(list(message_ids)),
                Message.status == "queued",
                or_(Message.not_before.is_(None), Message.not_before <= now),
            )
            .values(status="sending", claimed_at=now, attempts=Message.attempts + 1, updated_at=now)
            .returning(Message.id)
        )
    )
    session.commit()
    return claimed


def deliver_batch(
    session: Session, message_ids: Sequence[int], settings: dict[str, Any]
) -> BatchStats:
    """Claim and deliver the given messages; safe to run twice with the same ids."""
    now = utcnow()
    stats = BatchStats()
    ids = claim(session, message_ids, now)
    stats.claimed = len(ids)
    if not ids:
        return stats
    messages = list(
        session.scalars(select(Message).where(Message.id.in_(ids)).order_by(Message.id))
    )
    users = _load(session, User, {m.user_id for m in messages if m.user_id is not None})
    sends = _load(session, Send, {m.send_id for m in messages if m.send_id is not None})
    projects = _load(session, Project, {m.project_id for m in messages})
    suppressed = _suppressed(session, messages)
    recent = _recent_counts(session, messages, projects, now)
    hub = get_hub(settings.get("REDIS_URL") or None)
    to_publish: list[Delivery] = []
    ctx = ProviderContext(
        store_sandbox=lambda d: session.add(
            SandboxMessage(
                project_id=d.project_id,
                message_id=d.message_id,
                channel=d.channel,
                to=d.address,
                content=d.content,
                created_at=utcnow(),
            )
        ),
        # Published after the commit below, so a stream that replays from the database and
        # then listens can never miss a message between the two.
        publish=to_publish.append,
        settings=settings,
    )
    builder = ContentBuilder(session, sends)
    outcomes: dict[int, Outcome] = {}
    for message in messages:
        try:
            outcome = _deliver_one(
                message, users, sends, projects, suppressed, recent, ctx, settings, now, builder
            )
        except Exception as err:  # a bug in one message must not sink the batch
            log.exception("delivery of message %s crashed", message.id)
            outcome = Outcome("failed", f"internal error: {type(err).__name__}")
        outcomes[message.id] = outcome
        stats.outcomes[outcome.status] += 1
    _record(session, messages, outcomes, utcnow())
    session.commit()
    published = [
        _publication(d)
        for d in to_publish
        if outcomes[d.message_id].status == "sent" and d.user_id is not None
    ]
    try:
        hub.publish_many(published)
    except Exception as err:  # the rows are sent; open streams catch up on reconnect
        log.warning("publishing %d in-app messages failed: %s", len(published), err)
    return stats


def _load(session: Session, model: Any, ids: set[int]) -> dict[int, Any]:
    if not ids:
        return {}
    return {row.id: row for row in session.scalars(select(model).where(model.id.in_(ids)))}


def _suppressed(session: Session, messages: list[Message]) -> dict[tuple[int, str, str], str]:
    addresses = {m.address for m in messages}
    if not addresses:
        return {}
    rows = session.execute(
        select(
            Suppression.project_id, Suppression.channel, Suppression.address, Suppression.reason
        ).where(Suppression.address.in_(addresses))
    )
    return {(p, c, a): r for p, c, a, r in rows}


def _recent_counts(
    session: Session, messages: list[Message], projects: dict[int, Project], now: datetime
) -> Counter[int]:
    """Messages each user already received inside their project's frequency-cap window."""
    counts: Counter[int] = Counter()
    by_window: dict[int, set[int]] = {}
    for m in messages:
        cap = _cap(projects[m.project_id])
        if cap is None or m.transactional or m.user_id is None:
            continue
        by_window.setdefault(cap[1], set()).add(m.user_id)
    for window, user_ids in by_window.items():
        rows = session.execute(
            select(Message.user_id, func.count())
            .where(
                Message.user_id.in_(user_ids),
                Message.status.in_(REACHED),
                Message.transactional.is_(False),
                Message.sent_at > now - timedelta(seconds=window),
            )
            .group_by(Message.user_id)
        )
        counts.update({uid: n for uid, n in rows})
    return counts


def _cap(project: Project) -> tuple[int, int] | None:
    cap = (project.settings or {}).get("frequencyCap")
    if not cap:
        return None
    return int(cap["count"]), int(cap["windowSeconds"])


def _deliver_one(
    message: Message,
    users: dict[int, User],
    sends: dict[int, Send],
    projects: dict[int, Project],
    suppressed: dict[tuple[int, str, str], str],
    recent: Counter[int],
    ctx: ProviderContext,
    settings: dict[str, Any],
    now: datetime,
    builder: ContentBuilder,
) -> Outcome:
    project = projects[message.project_id]
    user = users.get(message.user_id) if message.user_id is not None else None
    send = sends.get(message.send_id) if message.send_id is not None else None
    if message.expires_at is not None and message.expires_at <= now:
        return Outcome("expired", "TTL passed before it could be sent")
    reason = suppressed.get((message.project_id, message.channel, message.address))
    if reason is not None:
        return Outcome("suppressed", f"address suppressed ({reason})")
    if not message.transactional:
        quiet = _quiet_hours(project, user, now)
        if quiet is not None:
            mode, until = quiet
            if mode == "drop":
                return Outcome("suppressed", "quiet hours")
            return Outcome(
                "queued", f"quiet hours: deferred to {until.isoformat()}", not_before=until
            )
        cap = _cap(project)
        if cap is not None and message.user_id is not None:
            if recent[message.user_id] >= cap[0]:
                return Outcome("suppressed", f"frequency cap: {cap[0]} per {cap[1]} s reached")
            recent[message.user_id] += 1
    provider_name = provider_for(message.channel, settings)
    if provider_name is None:
        return Outcome("failed", f"no provider configured for channel {message.channel}")
    try:
        content = builder.build(message, send, user)
    except ContentError as err:
        return Outcome("failed", f"render error: {err}")
    delivery = Delivery(
        message_id=message.id,
        project_id=message.project_id,
        user_id=message.user_id,
        channel=message.channel,
        address=message.address,
        content=content,
        increment_id=message.increment_id,
        increment_count=message.increment_count,
        replaces_id=message.replaces_id,
        overrides=message.overrides or {},
    )
    try:
        result: SendResult = get_provider(provider_name).send(delivery, ctx)
    except Retry as err:
        if message.attempts >= MAX_ATTEMPTS:
            return Outcome(
                "failed",
                f"gave up after {message.attempts} attempts: {err.reason}",
                provider=provider_name,
            )
        delay = timedelta(seconds=err.delay) if err.delay else backoff(message.attempts)
        return Outcome(
            "queued", f"retrying: {err.reason}", provider=provider_name, not_before=now + delay
        )
    return Outcome(result.status, result.reason, provider_name, result.provider_id, result.rendered)


def _quiet_hours(project: Project, user: User | None, now: datetime) -> tuple[str, datetime] | None:
    config = (project.settings or {}).get("quietHours")
    if not config:
        return None
    zone = (user.timezone if user is not None else None) or config.get("timezone") or "UTC"
    until = quiet_until(now, parse_hhmm(config["start"]), parse_hhmm(config["end"]), zone)
    if until is None:
        return None
    return config.get("mode", "defer"), until


def _publication(delivery: Delivery) -> tuple[str, dict[str, Any]]:
    assert delivery.user_id is not None
    return (
        stream_key(delivery.project_id, delivery.user_id),
        {
            "id": delivery.message_id,
            "content": delivery.content,
            "replaces": delivery.replaces_id,
            "count": delivery.increment_count,
        },
    )


def _record(
    session: Session, messages: list[Message], outcomes: dict[int, Outcome], now: datetime
) -> None:
    """Write every outcome and its history row in two statements."""
    rows = []
    history = []
    for m in messages:
        o = outcomes[m.id]
        row: dict[str, Any] = {
            "id": m.id,
            "status": o.status,
            "reason": o.reason,
            "updated_at": now,
        }
        if o.provider is not None:
            row["provider"] = o.provider
        if o.provider_id is not None:
            row["provider_id"] = o.provider_id
        if o.rendered is not None:
            row["rendered"] = o.rendered
        if o.status == "sent":
            row["sent_at"] = now
        if o.status == "queued":
            # Back in the queue for later: the sweeper enqueues it when due.
            row["not_before"] = o.not_before
            row["enqueued_at"] = None
        rows.append(row)
        history.append({"message_id": m.id, "status": o.status, "reason": o.reason, "at": now})
    # Group by the set of keys: an executemany needs the same columns in every row.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for group in groups.values():
        session.execute(update(Message), group)
    session.execute(insert(MessageStatusChange), history)
