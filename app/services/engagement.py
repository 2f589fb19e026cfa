"""What recipients (and the machines in front of them) do with an email after it left.

Opens, clicks, unsubscribes, bounces and complaints become `MessageEvent` rows, one per
(message, kind) however often they happen; a message's status only moves forward
(sent/delivered → opened → clicked). Link scanners and mail prefetchers fetch pixels and
follow links before (or instead of) a person: those are recorded as `machine_open` /
`machine_click` and move nothing. Functions flush, never commit: the caller owns the session.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Project, User
from app.models.base import utcnow
from app.models.message import Message
from app.services import outcome_events
from app.services.outbox import advance, record_event
from app.services.suppressions import suppress
from workers.channels import CHANNELS

# User agents of image proxies, link scanners and security gateways that fetch on their own.
MACHINE_AGENTS = re.compile(
    r"GoogleImageProxy|ggpht\.com|YahooMailProxy|Barracuda|Proofpoint|Mimecast|SafeLinks"
    r"|Safe\s?Links|BingPreview|Symantec|Forcepoint|Trend\s?Micro|Zscaler|Sophos|FireEye"
    r"|Microsoft Office Protocol Discovery|LinkScanner|Cisco|IronPort|urldefense",
    re.IGNORECASE,
)
# Apple Mail Privacy Protection fetches every image through Apple's proxies, with a bare UA.
APPLE_MPP_AGENT = "Mozilla/5.0"
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
# A person does not open (or click) an email within this long of its being sent.
TOO_FAST = timedelta(seconds=2)


@dataclass(frozen=True)
class Visit:
    """Who fetched a tracking link: its User-Agent and address."""

    user_agent: str
    ip: str | None = None


def machine_reason(visit: Visit, sent_at: datetime | None, now: datetime) -> str | None:
    """Why this fetch was a machine's and not a person's (None: a person, as far as we know)."""
    agent = visit.user_agent.strip()
    if not agent:
        return "no user agent"
    found = MACHINE_AGENTS.search(agent)
    if found:
        return f"link scanner or proxy ({found.group(0)})"
    if agent == APPLE_MPP_AGENT:
        return "Apple Mail Privacy Protection"
    if visit.ip:
        try:
            if ipaddress.ip_address(visit.ip) in APPLE_NETWORK:
                return "Apple Mail Privacy Protection"
        except ValueError:
            pass
    if sent_at is not None and now - sent_at < TOO_FAST:
        return "within 2 s of sending"
    return None


def _event(
    session: Session, message: Message, kind: str, detail: Mapping[str, Any], now: datetime
) -> bool:
    """Record `kind` for the message once; True if this call recorded it."""
    return record_event(session, message, kind, now, dict(detail))


def _detail(visit: Visit, machine: str | None, **extra: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {"userAgent": visit.user_agent[:300], **extra}
    if machine:
        detail["machine"] = machine
    return detail


def record_open(
    session: Session, *, message_id: int, visit: Visit, now: datetime | None = None
) -> str | None:
    """An open pixel was fetched: `open` (status → opened) or `machine_open`; None if the
    message is gone."""
    now = now or utcnow()
    message = session.get(Message, message_id)
    if message is None:
        return None
    machine = machine_reason(visit, message.sent_at, now)
    kind = "machine_open" if machine else "open"
    if _event(session, message, kind, _detail(visit, machine), now) and kind == "open":
        advance(session, message, "opened", at=now)
    return kind


def record_click(
    session: Session, *, message_id: int, target: str, visit: Visit, now: datetime | None = None
) -> str | None:
    """A tracked link was followed: `click` (status → clicked) or `machine_click`."""
    now = now or utcnow()
    message = session.get(Message, message_id)
    if message is None:
        return None
    # Mail scanners follow links the moment a message lands; a tap on a push notification
    # (or an in-app link) a second after it was sent is a person's.
    sent_at = message.sent_at if message.channel == "email" else None
    machine = machine_reason(visit, sent_at, now)
    kind = "machine_click" if machine else "click"
    detail = _detail(visit, machine, url=target[:2000])
    if _event(session, message, kind, detail, now) and kind == "click":
        advance(session, message, "clicked", at=now)
    return kind


def _suppress(
    session: Session, *, project_id: int, channel: str, address: str, reason: str, now: datetime
) -> bool:
    """Add the suppression (a hard bounce replaces an earlier unsubscribe or complaint)."""
    return suppress(
        session, project_id=project_id, channel=channel, address=address, reason=reason, now=now
    )


def unsubscribe(
    session: Session,
    *,
    project_id: int,
    channel: str,
    address: str,
    message_id: int | None,
    now: datetime | None = None,
) -> bool:
    """Opt `address` out of marketing on `channel` (suppression `unsubscribed`); True if new.

    The message the link came from gets an `unsubscribe` event, and its user the internal
    `message.unsubscribed` event (reason `link`), once.
    """
    now = now or utcnow()
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    added = _suppress(
        session,
        project_id=project_id,
        channel=channel,
        address=address,
        reason="unsubscribed",
        now=now,
    )
    message = session.get(Message, message_id) if message_id is not None else None
    if (
        message is not None
        and message.project_id == project_id
        and _event(session, message, "unsubscribe", {"address": address}, now)
    ):
        outcome_events.emit(session, [outcome_events.outcome(message, "unsubscribed", now, "link")])
    return added


# --- bounces and complaints reported later by the provider --------------------------------


@dataclass(frozen=True)
class Feedback:
    """A bounce or complaint as a provider reports it."""

    kind: str  # "bounce" (hard), "soft_bounce", "complaint" or "delivered"
    address: str
    message_id_header: str | None = None
    detail: Mapping[str, Any] | None = None


def strip_message_id(value: str) -> str:
    """A Message-ID without its angle brackets (how `messages.provider_id` stores it)."""
    return value.strip().strip("<>").strip()


def find_email_message(session: Session, feedback: Feedback) -> Message | None:
    """Our message a report is about: by its Message-ID, else the latest email to the address.

    The webhook URL names no project: the Message-ID we set (`messages.provider_id` of the
    `smtp` provider) identifies the message and so the project. A report without a known
    Message-ID goes to the project that last emailed the address.
    """
    if feedback.message_id_header:
        found = session.scalar(
            select(Message)
            .where(
                Message.provider == "smtp",
                Message.provider_id == strip_message_id(feedback.message_id_header),
            )
            .limit(1)
        )
        if found is not None:
            return found
    # messages.address has no index: go through the profiles holding the address (indexed by
    # project and email) and their messages (indexed by user and sent_at).
    holders = select(User.id).where(
        User.project_id.in_(select(Project.id)), User.email == feedback.address
    )
    return session.scalar(
        select(Message)
        .where(
            Message.user_id.in_(holders),
            Message.channel == "email",
            Message.address == feedback.address,
            Message.sent_at.is_not(None),
        )
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(1)
    )


def record_feedback(
    session: Session, feedback: Feedback, now: datetime | None = None
) -> Message | None:
    """Apply a report: a hard bounce suppresses (`bounce`), a complaint opts out of marketing
    (`complaint`), a soft bounce is only recorded, a delivery moves `sent` to `delivered`.
    None: no message of ours."""
    now = now or utcnow()
    message = find_email_message(session, feedback)
    if message is None:
        return None
    address = message.address if feedback.address in ("", None) else feedback.address
    detail = dict(feedback.detail or {})
    new = _event(session, message, feedback.kind, {**detail, "address": address}, now)
    if new and feedback.kind == "complaint":
        # A complaint opts the address out of marketing: the person unsubscribed, the hard way.
        outcome_events.emit(
            session, [outcome_events.outcome(message, "unsubscribed", now, "complaint")]
        )
    reason = {"bounce": "bounce", "complaint": "complaint"}.get(feedback.kind)
    if reason is not None:
        _suppress(
            session,
            project_id=message.project_id,
            channel="email",
            address=address,
            reason=reason,
            now=now,
        )
    if feedback.kind == "bounce" and address == message.address:
        advance(session, message, "failed", at=now, reason="bounced")
    if feedback.kind == "delivered" and address == message.address:
        advance(session, message, "delivered", at=now)
    return message
