"""Deliver a batch of messages: claim, load, plan, send, record.

No transaction is open while a provider runs (on SQLite an open transaction holds the write
lock, so one slow SMTP or HTTP send would stall ingestion): the claim commits, the load is one
short read transaction closed before any content is built, the plan is pure
(`journeys.delivery_policy`), providers send with no session in use, and the outcomes and the
providers' effects are recorded in one short transaction. A claim is durable before the send,
so a redelivered job finds nothing to do and a crashed worker's claims are recovered by the
sweeper.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import String, case, cast, distinct, func, literal, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.db import bulk_insert, bulk_update_pg, ids_in
from app.models import Audience, AudienceMember, Project, User
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
from app.services import links
from app.services.audiences import is_current
from app.services.rate_limits import describe, rate_for, reserve_slot
from app.services.suppressions import suppress
from journeys.delivery_policy import (
    DEFER,
    EXPIRE,
    SEND,
    Candidate,
    Decision,
    FrequencyCap,
    Preferences,
    QuietHours,
    plan,
)
from journeys.quiet_hours import parse_hhmm
from workers.channels import CHANNELS
from workers.channels.base import (
    Deactivate,
    Delivery,
    KeepCopy,
    ProviderContext,
    Publish,
    Reached,
    Retry,
    SendResult,
    Strike,
    Suppress,
)
from workers.channels.providers import get_provider, provider_for
from workers.content import ContentBuilder, ContentError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 600.0
# A rate-limit slot this close is waited for in place rather than queued for later.
SLOT_WAIT_SECONDS = 0.05
# How a throttled message's reason starts: such a message holds the slot in its not_before.
THROTTLED_PREFIX = "rate limit "


@dataclass
class Outcome:
    """The new state of one message after this job."""

    status: str
    reason: str | None = None
    provider: str | None = None
    provider_id: str | None = None
    rendered: dict[str, Any] | None = None
    not_before: datetime | None = None
    segments: int | None = None
    # What the provider asked us to do to our data, with the delivery it concerns.
    effects: tuple[Any, ...] = ()
    delivery: Delivery | None = None
    # The history row's status when it differs from the message's (`throttled`: queued).
    history_status: str | None = None
    # Give back the attempt the claim counted (a throttled message did not try).
    refund_attempt: bool = False
    # When the provider took it (not when the batch was recorded: rate limits spread sends).
    sent_at: datetime | None = None


@dataclass
class BatchStats:
    """What a batch did (for logs and benchmarks)."""

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


class Decidable(Protocol):
    """What the decision reads of one message: a stored `Message`, or a hypothetical one
    (the dry run, `app.services.simulate`), so both are decided by the same code."""

    @property
    def project_id(self) -> int: ...
    @property
    def user_id(self) -> int | None: ...
    @property
    def send_id(self) -> int | None: ...
    @property
    def channel(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def transactional(self) -> bool: ...
    @property
    def expires_at(self) -> datetime | None: ...


@dataclass(kw_only=True)
class Facts:
    """What deciding messages reads besides the messages, loaded in bulk (`load_facts`)."""

    users: dict[int, User]
    # Send id -> the send (only its `topic` is read here).
    sends: Mapping[int, Any]
    projects: dict[int, Project]
    suppressed: dict[tuple[int, str, str], str]
    recent: Counter[int]
    # (user, send, channel) already reached on a many-per-user channel (push devices).
    counted: set[tuple[int, int | None, str]] = field(default_factory=set)
    # (user id, topic key) for current members of `topic:<key>` audiences.
    topic_members: set[tuple[int, str]] = field(default_factory=set)
    # Project id -> its cap and quiet hours, read from settings once per batch, not per message.
    policies: dict[int, tuple[FrequencyCap | None, QuietHours | None]] = field(default_factory=dict)


@dataclass(kw_only=True)
class _Loaded(Facts):
    """Everything one batch reads, loaded in one short transaction."""

    messages: list[Message]
    sends: dict[int, Send]
    builder: ContentBuilder
    # (channel, address) -> what the channel's load_targets found (push subscriptions).
    targets: dict[tuple[str, str], Any] = field(default_factory=dict)


def backoff(attempt: int) -> timedelta:
    """Exponential backoff: 2 s, 4 s, 8 s... capped at 10 minutes."""
    return timedelta(seconds=min(BACKOFF_BASE_SECONDS * 2 ** (attempt - 1), BACKOFF_MAX_SECONDS))


def claim(session: Session, message_ids: Sequence[int], now: datetime) -> list[int]:
    """Move due `queued` messages to `sending` in one conditional UPDATE, committed with the
    batch's load (`_load`): one commit (a WAL flush) before the sends instead of two."""
    if not message_ids:
        return []
    claimed = list(
        session.scalars(
            update(Message)
            .where(
                ids_in(session, Message.id, message_ids),
                Message.status == "queued",
                or_(Message.not_before.is_(None), Message.not_before <= now),
            )
            .values(status="sending", claimed_at=now, attempts=Message.attempts + 1, updated_at=now)
            .returning(Message.id)
        )
    )
    if not claimed:
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
    loaded = _load(session, ids, now)
    # Nothing below may touch the database until the record step: closing (not only
    # committing) makes a stray lazy load fail loudly instead of opening a transaction.
    session.close()
    outcomes: dict[int, Outcome] = {}
    slots = _Slots(session, settings)
    ready: list[_Ready] = []
    # Decisions, caps and rendering in order (they share the batch's counts); then the
    # providers' sends of the ready messages at once: one slow push service no longer holds the
    # rest of the batch (in-app included) for the sum of its round trips.
    for message in loaded.messages:
        try:
            prepared = _deliver_one(message, loaded, settings, now, slots)
        except OperationalError as err:  # the database busy or away (a rate-limit slot's
            # transaction on a locked SQLite): nothing is wrong with the message, try it again
            log.warning(
                "delivery of message %s: database unavailable (%s); retrying", message.id, err
            )
            prepared = Outcome(
                "queued",
                f"retrying: database unavailable ({type(err).__name__})",
                not_before=now + backoff(1),
                refund_attempt=True,
            )
        except Exception as err:  # a bug in one message must not sink the batch
            log.exception("delivery of message %s crashed", message.id)
            prepared = Outcome("failed", f"internal error: {type(err).__name__}")
        if isinstance(prepared, _Ready):
            ready.append(prepared)
        else:
            outcomes[message.id] = prepared
    for item, outcome in zip(ready, _send_all(ready, settings), strict=True):
        outcomes[item.message.id] = outcome
    for message in loaded.messages:
        stats.outcomes[outcomes[message.id].status] += 1
    _record(session, loaded.messages, outcomes, utcnow())
    session.commit()
    _publish(settings, outcomes)
    return stats


# Provider sends in flight at once per worker process (they are network round trips).
DELIVERY_SEND_THREADS = 16


# --- load: one read transaction -----------------------------------------------------------


def _load(session: Session, ids: list[int], now: datetime) -> _Loaded:
    messages = list(
        session.scalars(
            select(Message).where(ids_in(session, Message.id, ids)).order_by(Message.id)
        )
    )
    sends = _by_id(session, Send, {m.send_id for m in messages if m.send_id is not None})
    projects = _by_id(session, Project, {m.project_id for m in messages})
    users = _by_id(session, User, {m.user_id for m in messages if m.user_id is not None})
    facts = load_facts(session, messages, sends=sends, projects=projects, users=users, now=now)
    loaded = _Loaded(
        messages=messages,
        users=facts.users,
        sends=sends,
        projects=facts.projects,
        suppressed=facts.suppressed,
        recent=facts.recent,
        counted=facts.counted,
        topic_members=facts.topic_members,
        builder=ContentBuilder(session, sends),
        targets=_targets(session, messages),
    )
    session.commit()
    return loaded


def load_facts(
    session: Session,
    messages: Sequence[Decidable],
    *,
    sends: Mapping[int, Any],
    projects: dict[int, Project],
    users: dict[int, User],
    now: datetime,
) -> Facts:
    """What `decide` reads for these messages (real or hypothetical), in a few bulk reads."""
    return Facts(
        users=users,
        sends=sends,
        projects=projects,
        suppressed=_suppressed(session, messages),
        recent=_recent_counts(session, messages, projects, now),
        counted=_sends_reached(session, messages, projects, now),
        topic_members=_topic_members(session, messages, sends, now),
    )


def _topic_members(
    session: Session, messages: Sequence[Decidable], sends: Mapping[int, Any], now: datetime
) -> set[tuple[int, str]]:
    """Who of these messages' users is a current member of their send's topic audience."""
    wanted: dict[int, set[str]] = {}
    for m in messages:
        send = sends.get(m.send_id) if m.send_id is not None else None
        if send is not None and send.topic and m.user_id is not None and not m.transactional:
            wanted.setdefault(m.project_id, set()).add(send.topic)
    if not wanted:
        return set()
    user_ids = {m.user_id for m in messages if m.user_id is not None}
    out: set[tuple[int, str]] = set()
    for project_id, topics in wanted.items():
        rows = session.execute(
            select(AudienceMember.user_id, Audience.name)
            .join(Audience, Audience.id == AudienceMember.audience_id)
            .where(
                Audience.project_id == project_id,
                Audience.name.in_([f"topic:{t}" for t in topics]),
                ids_in(session, AudienceMember.user_id, user_ids),
                is_current(now),
            )
        )
        out.update((uid, name.removeprefix("topic:")) for uid, name in rows)
    return out


def _targets(session: Session, messages: list[Message]) -> dict[tuple[str, str], Any]:
    by_channel: dict[str, list[Message]] = {}
    for m in messages:
        by_channel.setdefault(m.channel, []).append(m)
    out: dict[tuple[str, str], Any] = {}
    for name, group in by_channel.items():
        channel = CHANNELS.get(name)
        if channel is None:
            continue
        for address, target in channel.load_targets(session, group).items():
            out[(name, address)] = target
    return out


def _by_id(session: Session, model: Any, ids: set[int]) -> dict[int, Any]:
    if not ids:
        return {}
    return {
        row.id: row for row in session.scalars(select(model).where(ids_in(session, model.id, ids)))
    }


def _suppressed(session: Session, messages: Sequence[Decidable]) -> dict[tuple[int, str, str], str]:
    addresses = {m.address for m in messages}
    if not addresses:
        return {}
    rows = session.execute(
        select(
            Suppression.project_id, Suppression.channel, Suppression.address, Suppression.reason
        ).where(Suppression.address.in_(addresses))
    )
    return {(p, c, a): r for p, c, a, r in rows}


def _many_per_user() -> list[str]:
    return [name for name, c in CHANNELS.items() if c.many_per_user]


def _cap_unit() -> Any:
    """What the frequency cap counts: a message, but one per send on channels where a user
    has several addresses (a push to three devices is one notification, not three)."""
    return case(
        (
            Message.channel.in_(_many_per_user()),
            literal("s").concat(cast(Message.send_id, String)).concat(Message.channel),
        ),
        else_=literal("m").concat(cast(Message.id, String)),
    )


def _sends_reached(
    session: Session, messages: Sequence[Decidable], projects: dict[int, Project], now: datetime
) -> set[tuple[int, int | None, str]]:
    """(user, send, channel) of this batch's many-per-user messages whose send already reached
    the user inside the cap window: another device of the same send is not one more message."""
    many = set(_many_per_user())
    wanted: dict[int, set[tuple[int, int]]] = {}
    for m in messages:
        cap = _cap(projects[m.project_id])
        if cap is None or m.transactional or m.user_id is None or m.send_id is None:
            continue
        if m.channel in many:
            wanted.setdefault(cap.window_seconds, set()).add((m.user_id, m.send_id))
    out: set[tuple[int, int | None, str]] = set()
    for window, pairs in wanted.items():
        rows = session.execute(
            select(Message.user_id, Message.send_id, Message.channel)
            .where(
                Message.send_id.in_({s for _, s in pairs}),
                Message.user_id.in_({u for u, _ in pairs}),
                Message.channel.in_(many),
                Message.status.in_(REACHED),
                Message.sent_at > now - timedelta(seconds=window),
            )
            .distinct()
        )
        out.update((u, s, c) for u, s, c in rows if (u, s) in pairs)
    return out


def _cap_key(message: Decidable) -> tuple[int, int | None, str] | None:
    if message.user_id is None or not CHANNELS[message.channel].many_per_user:
        return None
    return (message.user_id, message.send_id, message.channel)


def _recent(message: Decidable, loaded: Facts) -> int | None:
    """What the cap sees for this message: the user's recent count, less this message's own
    send when another of its devices already got it."""
    if message.user_id is None:
        return None
    own = 1 if _cap_key(message) in loaded.counted else 0
    return loaded.recent[message.user_id] - own


def _count_planned(message: Decidable, loaded: Facts) -> None:
    """Counted when planned, so a batch holding several of one user's messages caps them;
    the devices of one send count once."""
    if message.transactional or message.user_id is None:
        return
    key = _cap_key(message)
    if key is not None:
        if key in loaded.counted:
            return
        loaded.counted.add(key)
    loaded.recent[message.user_id] += 1


def _recent_counts(
    session: Session, messages: Sequence[Decidable], projects: dict[int, Project], now: datetime
) -> Counter[int]:
    """Messages each user already received inside their project's frequency-cap window."""
    counts: Counter[int] = Counter()
    by_window: dict[int, set[int]] = {}
    for m in messages:
        cap = _cap(projects[m.project_id])
        if cap is None or m.transactional or m.user_id is None:
            continue
        by_window.setdefault(cap.window_seconds, set()).add(m.user_id)
    for window, user_ids in by_window.items():
        rows = session.execute(
            select(Message.user_id, func.count(distinct(_cap_unit())))
            .where(
                ids_in(session, Message.user_id, user_ids),
                Message.status.in_(REACHED),
                Message.transactional.is_(False),
                Message.sent_at > now - timedelta(seconds=window),
            )
            .group_by(Message.user_id)
        )
        counts.update({uid: n for uid, n in rows})
    return counts


# --- plan and send: no transaction open ---------------------------------------------------


def _cap(project: Project) -> FrequencyCap | None:
    cap = (project.settings or {}).get("frequencyCap")
    if not cap:
        return None
    return FrequencyCap(int(cap["count"]), int(cap["windowSeconds"]))


def _quiet_hours(project: Project) -> QuietHours | None:
    config = (project.settings or {}).get("quietHours")
    if not config:
        return None
    return QuietHours(
        start=parse_hhmm(config["start"]),
        end=parse_hhmm(config["end"]),
        mode=config.get("mode", "defer"),
        timezone=config.get("timezone") or "UTC",
    )


def _topic_default(project: Project, key: str) -> bool:
    """Whether the project's topic is opt-out (everyone in until they leave); an unknown
    topic counts as opt-in, so a typo never mails everybody."""
    for t in (project.settings or {}).get("topics") or ():
        if isinstance(t, dict) and t.get("key") == key:
            return bool(t.get("default", False))
    return False


def _candidate(message: Decidable, loaded: Facts, now: datetime) -> Candidate:
    project = loaded.projects[message.project_id]
    policies = loaded.policies.get(message.project_id)
    if policies is None:
        policies = loaded.policies[message.project_id] = (_cap(project), _quiet_hours(project))
    cap, quiet = policies
    user = loaded.users.get(message.user_id) if message.user_id is not None else None
    send = loaded.sends.get(message.send_id) if message.send_id is not None else None
    topic = send.topic if send is not None and send.topic else None
    return Candidate(
        now=now,
        transactional=message.transactional,
        expires_at=message.expires_at,
        suppressed=loaded.suppressed.get((message.project_id, message.channel, message.address)),
        channel=message.channel,
        preferences=(
            Preferences.from_json(user.preferences)
            if user is not None and user.preferences
            else None
        ),
        topic=topic,
        topic_default=_topic_default(project, topic) if topic is not None else False,
        topic_member=(
            topic is not None
            and message.user_id is not None
            and (message.user_id, topic) in loaded.topic_members
        ),
        user_timezone=user.timezone if user is not None else None,
        quiet_hours=quiet,
        cap=cap,
        recent=_recent(message, loaded),
    )


def _links(message: Message, settings: dict[str, Any]) -> dict[str, str]:
    """The signed links a template can use: `{{ unsubscribe_url }}`, `{{ preferences_url }}`."""
    out = {
        "unsubscribe_url": links.unsubscribe_url(
            settings,
            project_id=message.project_id,
            channel=message.channel,
            address=message.address,
            message_id=message.id,
        )
    }
    if message.user_id is not None:
        out["preferences_url"] = links.preferences_url(
            settings, project_id=message.project_id, user_id=message.user_id
        )
    return out


@dataclass
class _Slots:
    """Rate-limit slots, each reserved in a short transaction of its own (never while a
    provider sends, so the slot row is never held locked across network I/O)."""

    session: Session
    settings: dict[str, Any]

    def throttle(self, message: Message, project: Project, provider: str) -> Outcome | None:
        """None when the message may go now; else it waits for its slot (`throttled`)."""
        rate = rate_for(provider, self.settings, project.settings or {})
        if rate is None:
            return None
        if (
            message.not_before is not None
            and message.reason is not None
            and message.reason.startswith(THROTTLED_PREFIX)
        ):
            return None  # back at the slot it reserved when it was throttled
        try:
            slot = reserve_slot(
                self.session,
                project_id=message.project_id,
                provider=provider,
                rate=rate,
                now=utcnow(),
            )
            self.session.commit()
        finally:
            self.session.close()
        wait = (slot - utcnow()).total_seconds()
        if wait <= 0:
            return None
        if wait <= SLOT_WAIT_SECONDS:
            time.sleep(wait)
            return None
        return Outcome(
            "queued",
            f"{THROTTLED_PREFIX}{describe(provider, rate)}: waiting until {slot.isoformat()}",
            provider=provider,
            not_before=slot,
            history_status="throttled",
            refund_attempt=True,
        )


_DECIDED = {EXPIRE: "expired", DEFER: "queued"}


def decide(message: Decidable, facts: Facts, now: datetime) -> Decision:
    """Whether this message (real, or the dry run's) may go now: the delivery policies over
    what `facts` holds; a message planned to send counts against its user's cap at once."""
    decision = plan(_candidate(message, facts, now))
    if decision.action == SEND:
        _count_planned(message, facts)
    return decision


def _send_one(item: _Ready) -> Outcome:
    try:
        return item.send()
    except Exception as err:  # a bug in one message must not sink the batch
        log.exception("delivery of message %s crashed", item.message.id)
        return Outcome("failed", f"internal error: {type(err).__name__}")


_senders: ThreadPoolExecutor | None = None
_senders_lock = threading.Lock()


def _send_all(ready: list[_Ready], settings: dict[str, Any]) -> list[Outcome]:
    """The providers' sends, `DELIVERY_SEND_THREADS` at a time across the process's jobs
    (in order when it is 1, or for a single message)."""
    global _senders
    threads = int(settings.get("DELIVERY_SEND_THREADS", DELIVERY_SEND_THREADS))
    if threads <= 1 or len(ready) <= 1:
        return [_send_one(item) for item in ready]
    with _senders_lock:
        if _senders is None:
            _senders = ThreadPoolExecutor(threads, thread_name_prefix="cairn-send")
    return list(_senders.map(_send_one, ready))


def _deliver_one(
    message: Message,
    loaded: _Loaded,
    settings: dict[str, Any],
    now: datetime,
    slots: _Slots | None = None,
) -> Outcome | _Ready:
    """The message's outcome when it is not sent now, or what its provider's send needs."""
    decision = decide(message, loaded, now)
    if decision.action != SEND:
        status = _DECIDED.get(decision.action, "suppressed")
        return Outcome(status, decision.reason, not_before=decision.until)
    project = loaded.projects[message.project_id]
    provider_name = provider_for(message.channel, settings, project.settings or {})
    if provider_name is None:
        return Outcome("failed", f"no provider configured for channel {message.channel}")
    user = loaded.users.get(message.user_id) if message.user_id is not None else None
    send = loaded.sends.get(message.send_id) if message.send_id is not None else None
    channel = CHANNELS[message.channel]
    target = loaded.targets.get((message.channel, message.address))
    if target is None and channel.missing_target_reason is not None:
        return Outcome("failed", channel.missing_target_reason)
    try:
        content = loaded.builder.build(message, send, user, lambda: _links(message, settings))
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
        target=target or {},
        transactional=message.transactional,
        expires_at=message.expires_at,
        urgency=send.urgency if send is not None else None,
        topic=send.topic if send is not None else None,
        send_id=message.send_id,
    )
    try:
        provider = get_provider(provider_name)
    except KeyError:
        return Outcome("failed", f"unknown provider {provider_name!r}", provider=provider_name)
    ctx = ProviderContext(settings=settings, project_settings=project.settings or {})
    throttled = slots.throttle(message, project, provider_name) if slots is not None else None
    if throttled is not None:
        return throttled
    return _Ready(message, provider_name, provider, delivery, ctx, now)


@dataclass
class _Ready:
    """A message decided, rendered and within its rate: only the provider's send is left
    (`send` touches nothing shared, so the ready messages of a batch go out concurrently)."""

    message: Message
    provider_name: str
    provider: Any
    delivery: Delivery
    ctx: ProviderContext
    now: datetime

    def send(self) -> Outcome:
        message, provider_name, delivery = self.message, self.provider_name, self.delivery
        try:
            result: SendResult = self.provider.send(delivery, self.ctx)
        except Retry as err:
            result = SendResult("retry", err.reason, retry_after=err.delay)
        if result.status == "retry":
            return _retry(message, provider_name, result, self.now)
        return self._outcome(result)

    def _outcome(self, result: SendResult) -> Outcome:
        provider_name, delivery = self.provider_name, self.delivery
        return Outcome(
            result.status,
            result.reason,
            provider_name,
            result.provider_id,
            result.rendered,
            effects=result.effects,
            delivery=delivery,
            segments=result.segments,
            sent_at=utcnow(),
        )


def _retry(message: Message, provider: str, result: SendResult, now: datetime) -> Outcome:
    reason = result.reason or "transient failure"
    if message.attempts >= MAX_ATTEMPTS:
        return Outcome(
            "failed", f"gave up after {message.attempts} attempts: {reason}", provider=provider
        )
    delay = (
        timedelta(seconds=result.retry_after) if result.retry_after else backoff(message.attempts)
    )
    return Outcome("queued", f"retrying: {reason}", provider=provider, not_before=now + delay)


# --- record: one short transaction --------------------------------------------------------


def _keep_copy(session: Session, d: Delivery, _effect: Any, now: datetime) -> None:
    session.add(
        SandboxMessage(
            project_id=d.project_id,
            message_id=d.message_id,
            channel=d.channel,
            to=d.address,
            content=d.content,
            created_at=now,
        )
    )


def _suppress(session: Session, d: Delivery, effect: Any, now: datetime) -> None:
    # A hard bounce or STOP outranks an earlier unsubscribe: transactional stops too.
    suppress(
        session,
        project_id=d.project_id,
        channel=d.channel,
        address=d.address,
        reason=str(effect.reason),
        now=now,
    )


def _deactivate(session: Session, d: Delivery, effect: Any, now: datetime) -> None:
    if not CHANNELS[d.channel].apply_effect(session, d.address, effect, now):
        _suppress(session, d, effect, now)


def _address_effect(session: Session, d: Delivery, effect: Any, now: datetime) -> None:
    """A device's failure count (push); channels without address rows ignore it."""
    CHANNELS[d.channel].apply_effect(session, d.address, effect, now)


# Effect type -> how the record step applies it. Publish is applied after the commit instead.
EFFECTS: dict[type, Callable[[Session, Delivery, Any, datetime], None]] = {
    KeepCopy: _keep_copy,
    Suppress: _suppress,
    # A dead address is never tried again: a push device is marked inactive, others suppressed.
    Deactivate: _deactivate,
    Strike: _address_effect,
    Reached: _address_effect,
    Publish: lambda *_: None,
}


def _record(
    session: Session, messages: list[Message], outcomes: dict[int, Outcome], now: datetime
) -> None:
    """Write every outcome, its history row, the providers' effects and the internal events of
    final failures; a status a provider already reported is kept."""
    rows = []
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
        if o.segments is not None:
            row["segments"] = o.segments
        if o.refund_attempt:
            row["attempts"] = max(m.attempts - 1, 0)
        if o.status == "sent":
            row["sent_at"] = o.sent_at or now
        if o.status == "queued":
            # Back in the queue for later: the sweeper enqueues it when due.
            row["not_before"] = o.not_before
            row["enqueued_at"] = None
        rows.append(row)
    # Group by the set of keys: an executemany needs the same columns in every row.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    postgres = session.get_bind().dialect.name == "postgresql"
    kept_when = "t.status IN (" + ", ".join(f"'{s}'" for s in REPORTED) + ")"
    for keys, group in groups.items():
        if postgres:  # one statement for the group, not one UPDATE per message
            bulk_update_pg(session, Message, group, keep_when=kept_when, kept=("status", "reason"))
        else:
            session.execute(_update_keeping_reports(keys), [_bound(row) for row in group])
    kept = _kept_reports(session, messages, outcomes)
    history = [
        {
            "message_id": m.id,
            "status": outcomes[m.id].history_status or outcomes[m.id].status,
            "reason": outcomes[m.id].reason,
            "at": now,
        }
        for m in messages
        if m.id not in kept
    ]
    bulk_insert(session, MessageStatusChange, history)
    for o in outcomes.values():
        for effect in o.effects:
            assert o.delivery is not None
            EFFECTS[type(effect)](session, o.delivery, effect, now)
    _emit_failures(session, messages, outcomes, kept, now)


# Statuses a provider's report can set while a message is still `sending` (a Twilio status
# callback can arrive before this step commits the sid): the record step keeps them, and still
# stores the provider id, the rendered content and sent_at.
REPORTED = ("delivered", "opened", "clicked", "failed")


def _bound(row: dict[str, Any]) -> dict[str, Any]:
    # Bind names must differ from column names in an UPDATE's SET clause.
    return {f"b_{name}": value for name, value in row.items()}


def _update_keeping_reports(keys: tuple[str, ...]) -> Any:
    """UPDATE messages SET <keys> WHERE id = :id, leaving a reported status (and its reason)."""
    from sqlalchemy import Table, bindparam

    table: Table = Message.__table__  # type: ignore[assignment]
    # Constants, not one expanding IN parameter: those cannot be used with executemany.
    reported = table.c.status.in_([literal(status) for status in REPORTED])
    values: dict[str, Any] = {}
    for name in keys:
        if name == "id":
            continue
        value: Any = bindparam(f"b_{name}", type_=table.c[name].type)
        if name in ("status", "reason"):
            value = case((reported, table.c[name]), else_=value)
        values[name] = value
    return update(table).where(table.c.id == bindparam("b_id")).values(values)


def _kept_reports(
    session: Session, messages: list[Message], outcomes: dict[int, Outcome]
) -> dict[int, str]:
    """The messages whose reported status the update kept (id -> status): our UPDATE holds
    their row locks, so no report can change them before the commit."""
    reached = [m.id for m in messages if outcomes[m.id].provider is not None]
    if not reached:
        return {}
    found = session.execute(
        select(Message.id, Message.status).where(
            ids_in(session, Message.id, reached), Message.status.in_(REPORTED)
        )
    ).all()
    return {mid: status for mid, status in found if status != outcomes[mid].status}


def _emit_failures(
    session: Session,
    messages: list[Message],
    outcomes: dict[int, Outcome],
    kept: dict[int, str],
    now: datetime,
) -> None:
    """`message.failed` internal events for final failures (a retry is `queued`), in one
    INSERT for the batch."""
    from app.services import outcome_events

    failed = [
        outcome_events.outcome(m, "failed", now, outcomes[m.id].reason)
        for m in messages
        if outcomes[m.id].status == "failed" and m.id not in kept and m.user_id is not None
    ]
    if failed:
        outcome_events.emit(session, failed)


def _publish(settings: dict[str, Any], outcomes: dict[int, Outcome]) -> None:
    """After the commit, so a stream that replays from the database and then listens can
    never miss a message between the two."""
    published = [
        _publication(o.delivery)
        for o in outcomes.values()
        if o.status == "sent"
        and o.delivery is not None
        and o.delivery.user_id is not None
        and any(isinstance(e, Publish) for e in o.effects)
    ]
    if not published:
        return
    try:
        get_hub(settings).publish_many(published)
    except Exception as err:  # the rows are sent; open streams catch up on reconnect
        log.warning("publishing %d in-app messages failed: %s", len(published), err)


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
