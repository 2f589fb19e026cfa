"""SMS callbacks: Twilio's signature, delivery reports and inbound keywords (STOP, START, HELP).

Which project an inbound message concerns: the projects whose `settings.sms.from` is the
number it was sent to (`To`); when no project owns that number, every project without a
number of its own (they all send from TWILIO_FROM or the messaging service). So a STOP opts
the sender out of every project that sends from the number the person answered, which is
what carriers mean by STOP; with one project that is simply the default project.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from app.models import Project, User
from app.models.message import Message, Suppression
from app.services import outcome_events
from app.services.outbox import advance
from app.services.suppressions import suppress
from workers.channels import CHANNELS

log = logging.getLogger(__name__)

PROVIDER = "twilio"
GATEWAY = "webhook"
CHANNEL = "sms"
# Twilio's default opt-out, opt-in and help keywords (the whole body, trimmed, any case);
# OPTOUT and REVOKE joined the opt-out list in the 2025 CTIA guidelines.
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})
PUNCTUATION = ".,!?;:'\"()[]-"
# Reasons that only stop marketing: a STOP replaces them, since it stops everything.

# MessageStatus → our status; the other statuses (queued, sending, sent, accepted,
# scheduled...) are steps before these and change nothing.
FINAL_STATUSES = {
    "delivered": "delivered",
    "read": "delivered",
    "failed": "failed",
    "undelivered": "failed",
    "canceled": "failed",
}
# Delivery error codes that mean the number will never receive SMS: suppressed, as a hard
# bounce is for email. (30003, an unreachable handset, is usually a phone switched off.)
SUPPRESSING_ERRORS = {"21610": "stop", "30005": "invalid", "30006": "invalid"}
ERROR_TEXT = {
    "30001": "queue overflow",
    "30002": "account suspended",
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "message filtered by the carrier",
    "30008": "unknown error",
    "21610": "the recipient replied STOP",
}


# --- signatures -------------------------------------------------------------------------


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + name + value for each POST
    parameter, sorted by name; a repeated name's distinct values sorted too))."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + v for name in sorted(values) for v in sorted(values[name]))
    mac = hmac.new(token.encode(), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def _port_variants(url: str) -> list[str]:
    """The URL as given, and with its default port added or removed: Twilio signs what it
    called, and some of its clients write `:443` where others leave it out."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if default is None or parts.hostname is None:
        return [url]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = userinfo + "@" if userinfo else ""
    if parts.port is None:
        other = parts._replace(netloc=f"{prefix}{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=prefix + host)
    else:
        return [url]
    return [url, urlunsplit(other)]


def twilio_signature_valid(
    token: str, url: str, params: Sequence[tuple[str, str]], signature: str | None
) -> bool:
    """True if `signature` is Twilio's for this URL and these POST parameters."""
    if not token or not signature:
        return False
    return any(
        hmac.compare_digest(twilio_signature(token, candidate, params), signature)
        for candidate in _port_variants(url)
    )


# --- delivery reports -------------------------------------------------------------------


def _failure_reason(code: str, message: str) -> str:
    text = message or ERROR_TEXT.get(code, "")
    label = f"twilio {code}" if code else "twilio"
    return f"{label}: {text}"[:300] if text else label


def _by_our_id(session: Session, message_id: int | None, sid: str) -> Message | None:
    """The message named by the callback URL's `m`, if it can be the one Twilio reports on:
    an SMS sent (or being sent: provider not yet recorded) with Twilio, under this sid or none
    recorded yet."""
    if message_id is None:
        return None
    message = session.get(Message, message_id)
    if message is None or message.channel != CHANNEL:
        return None
    if message.provider not in (PROVIDER, None) or message.provider_id not in (sid, None):
        return None
    return message


def apply_twilio_status(
    session: Session,
    *,
    params: Mapping[str, str],
    now: datetime,
    message_id: int | None = None,
) -> str:
    """Apply one Twilio status callback; `applied`, `ignored` or `unknown` (see `apply_report`).

    `message_id` is our id from the StatusCallback URL (`?m=`, covered by Twilio's signature):
    the callback can outrun the worker's record of the send, before the sid is stored, so the
    message is found by it first and by the sid otherwise (callbacks of messages sent before
    the URL carried it).
    """
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    reported = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid:
        return "ignored"
    message = _by_our_id(session, message_id, sid) or session.scalar(
        select(Message).where(Message.provider == PROVIDER, Message.provider_id == sid)
    )
    if message is None:
        log.info("twilio status %r for unknown message %s", reported, sid)
        return "unknown"
    target = FINAL_STATUSES.get(reported)
    if target is None:
        return "ignored"
    code = (params.get("ErrorCode") or "").strip()
    reason = None
    if target == "failed":
        reason = _failure_reason(code, (params.get("ErrorMessage") or "").strip())
    detail: dict[str, Any] = {"status": reported}
    if code:
        detail["errorCode"] = code
    suppress = SUPPRESSING_ERRORS.get(code) if target == "failed" else None
    return apply_report(
        session, message, target, reason=reason, detail=detail, suppress=suppress, now=now
    )


def apply_report(
    session: Session,
    message: Message,
    target: str,
    *,
    reason: str | None,
    detail: dict[str, Any],
    suppress: str | None,
    now: datetime,
) -> str:
    """Move a `sent` (or still `sending`) message to `target` (`delivered` or `failed`):
    `applied` or `ignored`.

    Only a message still `sent` moves (see `outbox.advance`), so reports arriving late, twice
    or out of order never move a message backwards or flip a final status; `sending` too,
    since the report can outrun the worker's record of the send (which then keeps it). A move
    records its history row and a `delivered`/`failed` event, and may suppress the number.
    """
    moved = advance(
        session,
        message,
        target,
        at=now,
        reason=reason,
        event=target,
        detail=detail,
        while_sending=True,
    )
    if not moved:
        return "ignored"
    if suppress:
        _suppress(session, message.project_id, message.address, suppress, now)
    return "applied"


def apply_gateway_status(
    session: Session,
    *,
    message_id: int,
    status: str,
    reason: str | None,
    suppress: str | None,
    now: datetime,
) -> str:
    """Apply a `webhook` gateway's report for one of our message ids (`unknown` if it is not
    a message that gateway sent, or is sending: the report can outrun the worker's record)."""
    message = session.scalar(
        select(Message).where(
            Message.id == message_id,
            Message.channel == CHANNEL,
            or_(
                Message.provider == GATEWAY,
                and_(Message.provider.is_(None), Message.status == "sending"),
            ),
        )
    )
    if message is None:
        return "unknown"
    detail: dict[str, Any] = {"status": status}
    if reason:
        detail["reason"] = reason
    failure = f"gateway: {reason}"[:300] if reason else "gateway: failed"
    return apply_report(
        session,
        message,
        status,
        reason=failure if status == "failed" else None,
        detail=detail,
        suppress=suppress if status == "failed" else None,
        now=now,
    )


# --- inbound messages -------------------------------------------------------------------


def _sender_of(project: Project) -> str:
    sms = (project.settings or {}).get("sms") or {}
    return str(sms.get("fromNumber") or sms.get("from") or "")


def projects_for_number(session: Session, number: str) -> list[Project]:
    """The projects an inbound message to `number` concerns (see the module docstring)."""
    projects = list(session.scalars(select(Project).order_by(Project.id)))
    own = [p for p in projects if _sender_of(p) and _sender_of(p) == number]
    return own or [p for p in projects if not _sender_of(p)]


def _address(project: Project, raw: str) -> str:
    try:
        return CHANNELS[CHANNEL].normalize_address(raw, project.default_region)
    except ValueError:
        # A short code or an alphanumeric sender: kept as Twilio wrote it.
        return raw.strip()


def _suppress(session: Session, project_id: int, address: str, reason: str, now: datetime) -> None:
    # STOP replaces an earlier unsubscribe: it stops transactional messages too.
    suppress(
        session, project_id=project_id, channel=CHANNEL, address=address, reason=reason, now=now
    )


def default_help_text(project: Project) -> str:
    """The HELP answer of a project that set none."""
    return f"{project.name}: Reply STOP to unsubscribe, START to resubscribe."


def keyword(body: str) -> str | None:
    """`stop`, `start` or `help` for a body that is one of their keywords, else None.

    The whole body is the keyword, in any case, with surrounding spaces and punctuation and
    inner spaces ignored (`Stop.`, `STOP ALL`, `opt out`); a sentence merely containing one
    (`please stop`) is not, as with Twilio's own keyword handling.
    """
    word = "".join(body.upper().split()).strip(PUNCTUATION)
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def handle_inbound(
    session: Session, *, sender: str, to: str, body: str, now: datetime
) -> str | None:
    """Apply an inbound SMS's keyword; the text to answer with (HELP), else None.

    STOP suppresses the sender (reason `stop`, which stops transactional messages too);
    START lifts a `stop` suppression only (a bounce or a manual one stays); any other body
    changes nothing.
    """
    action = keyword(body)
    if action is None or not sender:
        return None
    projects = projects_for_number(session, to.strip())
    if action == "help":
        if not projects:
            return None
        project = projects[0]
        text = ((project.settings or {}).get("sms") or {}).get("helpText")
        return str(text) if text else default_help_text(project)
    stopped: list[outcome_events.Outcome] = []
    for project in projects:
        address = _address(project, sender)
        if action == "stop":
            _suppress(session, project.id, address, "stop", now)
            answered = last_sms_to(session, project.id, address)
            if answered is not None:
                stopped.append(outcome_events.outcome(answered, "unsubscribed", now, "stop"))
        else:
            session.execute(
                delete(Suppression).where(
                    Suppression.project_id == project.id,
                    Suppression.channel == CHANNEL,
                    Suppression.address == address,
                    Suppression.reason == "stop",
                )
            )
    if stopped:
        outcome_events.emit(session, stopped)
    log.info("inbound %s from an SMS sender for %d project(s)", action, len(projects))
    return None


def last_sms_to(session: Session, project_id: int, address: str) -> Message | None:
    """The project's latest SMS sent to `address`: the one a STOP answers."""
    # messages.address has no index: through the profiles holding the number (indexed by
    # project and phone) and their messages (indexed by user and sent_at).
    holders = select(User.id).where(User.project_id == project_id, User.phone == address)
    return session.scalar(
        select(Message)
        .where(
            Message.user_id.in_(holders),
            Message.channel == CHANNEL,
            Message.address == address,
            Message.sent_at.is_not(None),
        )
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(1)
    )


def twiml(message: str | None = None) -> str:
    """A TwiML answer: empty, or one reply message."""
    head = '<?xml version="1.0" encoding="UTF-8"?>'
    if message is None:
        return head + "<Response/>"
    return f"{head}<Response><Message>{escape(message)}</Message></Response>"


# --- the generic gateway's callbacks ----------------------------------------------------

# A gateway callback older (or further ahead) than this is refused: a replay.
GATEWAY_TOLERANCE_SECONDS = 300


def gateway_signature_problem(
    secret: str, timestamp: str | None, body: bytes, signature: str | None, now: float
) -> str | None:
    """Why a gateway callback's X-Cairn-Timestamp / X-Cairn-Signature are refused (None: ok).

    The same scheme as our requests to the gateway: `sha256=` + hex HMAC-SHA256(secret,
    timestamp + "." + raw body), the timestamp within five minutes of our clock.
    """
    from workers.channels.providers.sms_webhook import sign

    if not secret:
        return "SMS_WEBHOOK_SECRET is not set: gateway callbacks cannot be verified"
    if not timestamp or not signature:
        return "X-Cairn-Timestamp and X-Cairn-Signature are required"
    try:
        sent = int(timestamp)
    except ValueError:
        return "X-Cairn-Timestamp: expected unix seconds"
    if abs(now - sent) > GATEWAY_TOLERANCE_SECONDS:
        return "X-Cairn-Timestamp: too far from now (a replay?)"
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        return "X-Cairn-Signature does not match the body"
    return None
