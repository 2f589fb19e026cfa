"""Direct sends: create message rows (the outbox) and defer their delivery jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.db import defer
from app.errors import InvalidInput
from app.models import Project, User
from app.models.base import utcnow
from app.models.message import Message, Send
from app.services.named import id_problem
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
) -> Send:
    """Store a send request (its content once, not per recipient)."""
    send = Send(
        project_id=project.id,
        kind=kind,
        channels=list(channels),
        content=content,
        ttl_seconds=ttl_seconds,
        transactional=transactional,
        target=target,
        template_id=template_id,
        status="fanning_out" if target else "done",
        cursor=0,
        recipients=0,
        deduplicated=0,
        created_at=utcnow(),
        # The sweeper hands a fan-out out again only if this lease runs out.
        lease_until=utcnow() + FANOUT_LEASE if target else None,
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
    for user in users:
        for channel in send.channels:
            address = CHANNELS[channel].address_of(user)
            if address is None:
                summary.unreachable[channel] = summary.unreachable.get(channel, 0) + 1
                continue
            rows.append(
                message_row(send, channel=channel, address=address, user_id=user.id, now=now)
            )
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


def validate_channels(raw: Any) -> list[str]:
    """A non-empty list of known channels, duplicates removed."""
    if raw is None:
        return list(DEFAULT_CHANNELS)
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(c, str) and c in CHANNELS for c in raw)
    ):
        raise InvalidInput(
            "channels must be a non-empty list of " + ", ".join(CHANNELS),
            {"channels": [f"one or more of {', '.join(CHANNELS)}"]},
        )
    return list(dict.fromkeys(raw))


MAX_TTL = 28 * 24 * 3600


def parse_send_options(body: dict[str, Any]) -> tuple[list[str], int | None, bool]:
    """channels, ttlSeconds and transactional of a send request, validated."""
    channels = validate_channels(body.get("channels"))
    ttl = body.get("ttlSeconds")
    if ttl is not None and (
        not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL
    ):
        raise InvalidInput("ttlSeconds out of range", {"ttlSeconds": [f"1-{MAX_TTL}"]})
    transactional = body.get("transactional", False)
    if not isinstance(transactional, bool):
        raise InvalidInput("transactional must be a boolean", {"transactional": ["boolean"]})
    return channels, ttl, transactional


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

USER_FILL = {
    "userEmail": "email",
    "userPhone": "phone",
    "userLanguage": "language",
    "userTimezone": "timezone",
}
MESSAGE_FIELDS = {
    "template",
    "userId",
    "data",
    "id",
    "incrementId",
    "overrides",
    "channels",
    "ttlSeconds",
    "transactional",
    *USER_FILL,
}


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


def overrides_problems(overrides: Any) -> dict[str, list[str]]:
    """`overrides` is `{channel: {field: template}}`; errors name `overrides.<channel>`."""
    errors: dict[str, list[str]] = {}
    if isinstance(overrides, dict):
        for channel, value in overrides.items():
            if channel not in CHANNELS or not isinstance(value, dict):
                errors[f"overrides.{channel}"] = [f"an object per channel ({', '.join(CHANNELS)})"]
    return errors


def _validate_item(item: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not isinstance(item, dict):
        return {"_schema": ["expected an object"]}
    for name in sorted(set(item) - MESSAGE_FIELDS):
        errors[name] = ["unknown field"]
    template = item.get("template")
    if not (isinstance(template, str) and template) and not (
        isinstance(template, int) and not isinstance(template, bool)
    ):
        errors["template"] = ["required: a template id or name"]
    elif id_problem(template) is not None:
        errors["template"] = [str(id_problem(template))]
    user_id = item.get("userId")
    if not isinstance(user_id, str) or not 0 < len(user_id) <= 255:
        errors["userId"] = ["required, a string of 1-255 characters"]
    for name in ("id", "incrementId"):
        value = item.get(name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 255):
            errors[name] = ["a string of 1-255 characters"]
    for name in ("data", "overrides"):
        if item.get(name) is not None and not isinstance(item[name], dict):
            errors[name] = ["must be an object"]
    errors.update(overrides_problems(item.get("overrides")))
    for name in USER_FILL:
        if item.get(name) is not None and not isinstance(item[name], str):
            errors[name] = ["must be a string"]
    return errors


def _fill_profile(user: User, item: dict[str, Any], project: Project) -> dict[str, list[str]]:
    """`user*` fields fill what the profile lacks; they never overwrite."""
    from app.services.profiles import FieldError
    from app.services.users import normalize_field

    errors: dict[str, list[str]] = {}
    for name, column in USER_FILL.items():
        raw = item.get(name)
        if raw is None:
            continue
        try:
            value = normalize_field(column, raw, project.default_region)
        except FieldError as err:
            errors[name] = [str(err)]
            continue
        if getattr(user, column) is None:
            setattr(user, column, value)
    return errors


def send_template_messages(
    session: Session, *, project: Project, items: Sequence[Any], stack_window: int
) -> list[MessageResult]:
    """Create each item's messages; one bad item does not stop the others."""
    from app.errors import DomainError, NotFound
    from app.services.templates import get_template

    results: list[MessageResult] = []
    seen_ids: set[str] = set()
    for item in items:
        errors = _validate_item(item)
        if errors:
            results.append(
                MessageResult(
                    False,
                    item.get("id")
                    if isinstance(item, dict) and isinstance(item.get("id"), str)
                    else None,
                    "invalid",
                    errors,
                )
            )
            continue
        client_id = item.get("id")
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
            template = get_template(session, project_id=project.id, ref=item["template"])
        except NotFound:
            results.append(
                MessageResult(False, client_id, "template/not-found", {"template": ["not found"]})
            )
            continue
        try:
            channels, ttl, transactional = parse_send_options(
                {
                    **item,
                    "channels": item.get("channels")
                    or [c for c in CHANNELS if c in (template.channels or {})],
                }
            )
        except DomainError as err:
            results.append(MessageResult(False, client_id, "invalid", err.errors))
            continue
        [user] = users_by_external_ids(session, project.id, [item["userId"]])
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
            channels=channels,
            content=item.get("data") or {},
            ttl_seconds=ttl,
            transactional=transactional,
            template_id=template.id,
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
    item: dict[str, Any],
    result: MessageResult,
    stack_window: int,
) -> None:
    ids, unreachable = user_messages(
        session,
        send=send,
        user=user,
        content=item.get("data") or {},
        overrides=item.get("overrides"),
        increment_id=item.get("incrementId"),
        stack_window=stack_window,
    )
    result.channel_errors.update(unreachable)
    result.message_ids += ids
    send.recipients = len(result.message_ids)


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
    for channel in send.channels:
        address = CHANNELS[channel].address_of(user)
        if address is None:
            unreachable[channel] = CHANNELS[channel].unreachable_reason
            continue
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
