"""Direct sends: create message rows (the outbox) and defer their delivery jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, true
from sqlalchemy.orm import Session

from app.db import defer
from app.errors import Conflict, InvalidInput, TooLarge
from app.models import Project, User
from app.models.base import utcnow
from app.models.message import Message, Send
from app.services.outbox import FANOUT_LEASE, insert_messages, message_row
from journeys.filters import to_json
from workers.channels import CHANNELS

DEFAULT_CHANNELS = ("inapp",)


def parse_segment(
    session: Session, project_id: int, raw: Any, field_name: str = "segment"
) -> dict[str, Any]:
    """A segment in any form, or a stored segment's id or name, as a normalized tree.

    Invalid input is a 4xx naming the node (`segment.all[1].op`).
    """
    from app.services.segments import parse_segment_filter, resolve_segment

    if isinstance(raw, str):
        cond = resolve_segment(session, project_id=project_id, raw=raw, field=field_name)
    else:
        cond = parse_segment_filter(raw, field_name)
    return to_json(cond)


@dataclass
class SendSummary:
    """What a send request created."""

    send: Send
    message_ids: list[int] = field(default_factory=list)
    deduplicated: int = 0
    unreachable: dict[str, int] = field(default_factory=dict)


def _known_topic(project: Project, topic: str | None) -> str | None:
    """A topic must be one of the project's `settings.topics` (else a 422 naming it)."""
    if topic is None:
        return None
    known = [t["key"] for t in (project.settings or {}).get("topics") or []]
    if topic not in known:
        raise InvalidInput(
            f"unknown topic {topic!r}",
            {"topic": [f"one of settings.topics: {', '.join(known) or 'none defined'}"]},
        )
    return topic


def send_values(
    project: Project,
    *,
    kind: str,
    channels: Sequence[str],
    content: dict[str, Any],
    ttl_seconds: int | None,
    transactional: bool,
    target: dict[str, Any] | None = None,
    template_id: int | None = None,
    topic: str | None = None,
    urgency: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The columns of a send request (its content once, not per recipient)."""
    now = now or utcnow()
    return {
        "project_id": project.id,
        "kind": kind,
        "channels": list(channels),
        "content": content,
        "ttl_seconds": ttl_seconds,
        "transactional": transactional,
        "target": target,
        "template_id": template_id,
        "topic": _known_topic(project, topic),
        "urgency": urgency,
        "status": "fanning_out" if target else "done",
        "cursor": 0,
        "recipients": 0,
        "deduplicated": 0,
        "created_at": now,
        # The sweeper hands a fan-out out again only if this lease runs out.
        "lease_until": now + FANOUT_LEASE if target else None,
    }


def create_send(
    session: Session,
    *,
    project: Project,
    kind: str,
    channels: Sequence[str],
    content: dict[str, Any],
    ttl_seconds: int | None,
    transactional: bool,
    target: dict[str, Any] | None = None,
    template_id: int | None = None,
    topic: str | None = None,
    urgency: str | None = None,
) -> Send:
    """Store a send request, flushed (its fan-out job deferred when it has a target)."""
    send = Send(
        **send_values(
            project,
            kind=kind,
            channels=channels,
            content=content,
            ttl_seconds=ttl_seconds,
            transactional=transactional,
            target=target,
            template_id=template_id,
            topic=topic,
            urgency=urgency,
        )
    )
    session.add(send)
    session.flush()
    if target:
        defer(session, "fan_out_send", send.id)
    return send


def send_to_users(
    session: Session,
    *,
    send: Send,
    users: Sequence[User],
    increment_id: str | None = None,
    stack_window: int = 0,
) -> SendSummary:
    """One message per (user, channel) the user is reachable on (the send's content)."""
    summary = SendSummary(send)
    if increment_id is not None:
        for user in users:
            ids, unreachable = user_messages(
                session,
                send=send,
                user=user,
                content=None,
                overrides=None,
                increment_id=increment_id,
                stack_window=stack_window,
            )
            summary.message_ids += ids
            for channel in unreachable:
                summary.unreachable[channel] = summary.unreachable.get(channel, 0) + 1
        send.recipients = len(summary.message_ids)
        return summary
    now = utcnow()
    rows = []
    # Per channel, each user's addresses (push: one per device, so one message per device).
    addresses = {c: CHANNELS[c].addresses_of(session, users) for c in send.channels}
    for user in users:
        for channel in send.channels:
            found = addresses[channel].get(user.id)
            if not found:
                summary.unreachable[channel] = summary.unreachable.get(channel, 0) + 1
                continue
            rows += [
                message_row(send, channel=channel, address=address, user_id=user.id, now=now)
                for address in found
            ]
    summary.message_ids = insert_messages(session, rows)
    summary.deduplicated = len(rows) - len(summary.message_ids)
    send.recipients = len(summary.message_ids)
    send.deduplicated = summary.deduplicated
    return summary


def users_by_external_ids(
    session: Session, project_id: int, external_ids: Sequence[str]
) -> list[User]:
    """Profiles for userIds, created on first sight, in request order."""
    from app.services.users import ensure_user_ids

    ids = ensure_user_ids(session, project_id, external_ids, utcnow())
    rows = {u.id: u for u in session.scalars(select(User).where(User.id.in_(list(ids.values()))))}
    return [rows[ids[e]] for e in dict.fromkeys(external_ids)]


MAX_TTL = 28 * 24 * 3600
MAX_USERS = 1000


@dataclass(frozen=True)
class SendOptions:
    """How a send's messages go out: on which channels, for how long, under which rules."""

    channels: list[str]
    ttl_seconds: int | None = None
    transactional: bool = False
    # A marketing send's topic (only its subscribers are reached) and the push Urgency.
    topic: str | None = None
    urgency: str | None = None


@dataclass(frozen=True)
class Notification:
    """A direct send (POST /v1/notify), checked by `app.schemas.notify`.

    Exactly one target: `user_ids` (userId or userIds), `segment` (any form, resolved here)
    or `broadcast`. `content` holds title, body, url, data and overrides when given.
    """

    content: dict[str, Any]
    options: SendOptions
    user_ids: list[str] | None = None
    segment: Any = None
    broadcast: bool = False
    client_id: str | None = None
    increment_id: str | None = None


def _refuse_taken_id(session: Session, project_id: int, client_id: str | None) -> None:
    if client_id is not None and session.scalar(
        select(Send.id).where(Send.project_id == project_id, Send.client_id == client_id)
    ):
        raise Conflict("id/exists", {"id": ["id/exists"]})


def notify(
    session: Session, *, project: Project, notification: Notification, stack_window: int
) -> dict[str, Any]:
    """Store a direct send: a fan-out for a segment or a broadcast, else the users' messages.

    A taken client id is a 409 `id/exists`, more than `MAX_USERS` userIds a 413.
    """
    options = notification.options
    _refuse_taken_id(session, project.id, notification.client_id)
    if notification.user_ids is not None and len(notification.user_ids) > MAX_USERS:
        raise TooLarge(f"at most {MAX_USERS} userIds", {"userIds": [f"at most {MAX_USERS}"]})
    target: dict[str, Any] | None = None
    if notification.broadcast:
        target = {"broadcast": True}
    elif notification.user_ids is None:
        target = {"segment": parse_segment(session, project.id, notification.segment)}
    send = create_send(
        session,
        project=project,
        kind="notify",
        channels=options.channels,
        content=notification.content,
        ttl_seconds=options.ttl_seconds,
        transactional=options.transactional,
        topic=options.topic,
        urgency=options.urgency,
        target=target,
    )
    send.client_id = notification.client_id
    if notification.user_ids is None:
        return {"id": send.id, "status": send.status}
    users = users_by_external_ids(session, project.id, notification.user_ids)
    summary = send_to_users(
        session,
        send=send,
        users=users,
        increment_id=notification.increment_id,
        stack_window=stack_window,
    )
    return {
        "id": send.id,
        "status": "queued",
        "messages": len(summary.message_ids),
        "deduplicated": summary.deduplicated,
        "unreachable": summary.unreachable,
        "messageIds": summary.message_ids,
    }


def message_log_query(
    project_id: int, *, after_id: int | None, filters: dict[str, Any]
) -> Select[tuple[Message]]:
    """Messages of a project, newest last, filtered by user, send, channel, status and time."""
    stmt = select(Message).where(Message.project_id == project_id).order_by(Message.id)
    if after_id is not None:
        stmt = stmt.where(Message.id > after_id)
    if filters.get("user_pk") is not None:
        stmt = stmt.where(Message.user_id == filters["user_pk"])
    for name, column in (
        ("send_id", Message.send_id),
        ("channel", Message.channel),
        ("status", Message.status),
    ):
        if filters.get(name) is not None:
            stmt = stmt.where(column == filters[name])
    if filters.get("since") is not None:
        stmt = stmt.where(Message.created_at >= filters["since"])
    if filters.get("until") is not None:
        stmt = stmt.where(Message.created_at < filters["until"])
    return stmt


# --- POST /v1/messages: one template message per item, fanned into the template's channels ---

# The `user*` fields of a template message and the profile columns they fill.
USER_FILL = {
    "userEmail": "email",
    "userPhone": "phone",
    "userLanguage": "language",
    "userTimezone": "timezone",
}


@dataclass(frozen=True)
class TemplateMessage:
    """One item of POST /v1/messages, checked by `app.schemas.messages`.

    `channels` None means the template's; `profile` maps a profile column to the raw value
    that fills it when the profile lacks one.
    """

    template: str | int
    user_id: str
    data: dict[str, Any] = field(default_factory=dict)
    channels: list[str] | None = None
    ttl_seconds: int | None = None
    transactional: bool = False
    topic: str | None = None
    urgency: str | None = None
    client_id: str | None = None
    increment_id: str | None = None
    overrides: dict[str, Any] | None = None
    profile: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InvalidMessage:
    """An item the schema refused: answered `{ok: false, error: invalid, errors}`."""

    errors: dict[str, Any]
    client_id: str | None = None


@dataclass
class MessageResult:
    """Per-item answer: `{ok, id, error?, emailError?, smsError?}`."""

    ok: bool
    id: str | None = None
    error: str | None = None
    errors: dict[str, Any] | None = None
    channel_errors: dict[str, str] = field(default_factory=dict)
    message_ids: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The API shape."""
        out: dict[str, Any] = {"ok": self.ok, "id": self.id}
        if self.error:
            out["error"] = self.error
        if self.errors:
            out["errors"] = self.errors
        for channel, reason in self.channel_errors.items():
            out[f"{channel}Error"] = reason
        if self.message_ids:
            out["messageIds"] = self.message_ids
        return out


def _fill_profile(user: User, item: TemplateMessage, project: Project) -> dict[str, list[str]]:
    """`user*` fields fill what the profile lacks; they never overwrite."""
    from app.services.profiles import FieldError
    from app.services.users import normalize_field

    names = {column: name for name, column in USER_FILL.items()}
    errors: dict[str, list[str]] = {}
    for column, raw in item.profile.items():
        try:
            value = normalize_field(column, raw, project.default_region)
        except FieldError as err:
            errors[names[column]] = [str(err)]
            continue
        if getattr(user, column) is None:
            setattr(user, column, value)
    return errors


def send_template_messages(
    session: Session,
    *,
    project: Project,
    items: Sequence[TemplateMessage | InvalidMessage],
    stack_window: int,
) -> list[MessageResult]:
    """Create each item's messages; one bad item does not stop the others."""
    from app.errors import NotFound
    from app.services.templates import get_template

    results: list[MessageResult] = []
    seen_ids: set[str] = set()
    for item in items:
        if isinstance(item, InvalidMessage):
            results.append(MessageResult(False, item.client_id, "invalid", item.errors))
            continue
        client_id = item.client_id
        if client_id is not None and (
            client_id in seen_ids
            or session.scalar(
                select(Send.id).where(Send.project_id == project.id, Send.client_id == client_id)
            )
            is not None
        ):
            results.append(MessageResult(False, client_id, "id/exists"))
            continue
        try:
            template = get_template(session, project_id=project.id, ref=item.template)
        except NotFound:
            results.append(
                MessageResult(False, client_id, "template/not-found", {"template": ["not found"]})
            )
            continue
        channels = item.channels or [c for c in CHANNELS if c in (template.channels or {})]
        if not channels:
            results.append(
                MessageResult(
                    False, client_id, "invalid", {"channels": ["the template has no channel"]}
                )
            )
            continue
        try:
            _known_topic(project, item.topic)
        except InvalidInput as err:
            results.append(MessageResult(False, client_id, "invalid", err.errors))
            continue
        [user] = users_by_external_ids(session, project.id, [item.user_id])
        fill_errors = _fill_profile(user, item, project)
        if fill_errors:
            results.append(MessageResult(False, client_id, "invalid", fill_errors))
            continue
        if client_id is not None:
            seen_ids.add(client_id)
        send = create_send(
            session,
            project=project,
            kind="message",
            channels=list(dict.fromkeys(channels)),
            content=item.data,
            ttl_seconds=item.ttl_seconds,
            transactional=item.transactional,
            template_id=template.id,
            topic=item.topic,
            urgency=item.urgency,
        )
        send.client_id = client_id
        result = MessageResult(True, client_id or str(send.id))
        _create_item_messages(session, send, user, item, result, stack_window)
        results.append(result)
    session.flush()
    return results


def _create_item_messages(
    session: Session,
    send: Send,
    user: User,
    item: TemplateMessage,
    result: MessageResult,
    stack_window: int,
) -> None:
    ids, unreachable = user_messages(
        session,
        send=send,
        user=user,
        content=item.data,
        overrides=item.overrides,
        increment_id=item.increment_id,
        stack_window=stack_window,
    )
    result.channel_errors.update(unreachable)
    result.message_ids += ids
    send.recipients = len(result.message_ids)


def _user_addresses(
    session: Session, channels: Sequence[str], user: User, unreachable: dict[str, str]
) -> list[tuple[str, str]]:
    """(channel, address) for each address of the user (several on push); the channels
    without one go into `unreachable` with their reason."""
    out: list[tuple[str, str]] = []
    for channel in channels:
        found = CHANNELS[channel].addresses_of(session, [user]).get(user.id)
        if not found:
            unreachable[channel] = CHANNELS[channel].unreachable_reason
        out += [(channel, address) for address in found or ()]
    return out


# An increment group's earlier message that is already out: the new one replaces it.
_OUT = ("sending", "sent", "delivered", "opened", "clicked")


def user_messages(
    session: Session,
    *,
    send: Send,
    user: User,
    content: dict[str, Any] | None,
    overrides: dict[str, Any] | None,
    increment_id: str | None,
    stack_window: int,
) -> tuple[list[int], dict[str, str]]:
    """One user's messages of a send, one per reachable channel; with an `incrementId`, a
    still pending message of the same group is stacked into instead (latest content, one
    more in the count). Returns the message ids and, per unreachable channel, why."""
    now = utcnow()
    ids: list[int] = []
    unreachable: dict[str, str] = {}
    rows = []
    for channel, address in _user_addresses(session, send.channels, user, unreachable):
        extra: dict[str, Any] = {"overrides": overrides, "content": content}
        if increment_id is not None:
            extra["increment_id"] = increment_id
            previous = session.scalar(
                select(Message)
                .where(
                    Message.project_id == send.project_id,
                    Message.user_id == user.id,
                    Message.channel == channel,
                    Message.increment_id == increment_id,
                    Message.created_at > now - timedelta(seconds=stack_window),
                    # Several addresses (push devices): each stacks on its own.
                    Message.address == address if CHANNELS[channel].many_per_user else true(),
                )
                .order_by(Message.id.desc())
                .limit(1)
                .with_for_update()
            )
            if previous is not None and previous.status == "queued":
                previous.content = content
                previous.overrides = overrides
                previous.send_id = send.id
                previous.increment_count += 1
                previous.updated_at = now
                ids.append(previous.id)
                continue
            if previous is not None and previous.status in _OUT:
                extra["replaces_id"] = previous.id
                extra["increment_count"] = previous.increment_count + 1
        rows.append(
            message_row(send, channel=channel, address=address, user_id=user.id, now=now, **extra)
        )
    ids += insert_messages(session, rows)
    return ids, unreachable
