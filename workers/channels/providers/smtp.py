"""Email over SMTP (`SMTP_URL`): multipart text + HTML, tracking, one-click unsubscribe.

`SMTP_URL` is `smtp://user:pass@host:587?starttls=1` (STARTTLS), `smtp://host:25` (plain) or
`smtps://user:pass@host:465` (implicit TLS). The sender is, first to last: the message's
overrides (`{email: {from, fromName, replyTo}}`), the project's `settings.email`, `SMTP_FROM`.

Each worker thread keeps its own connection per server and reuses it (a NOOP checks one idle
for a while; a disconnected one is reopened once). Outcomes: 250 → sent with the Message-ID as
the provider id; a 5xx for the recipient (at RCPT or at DATA) → failed and the address
suppressed (`bounce`); a 4xx, a refused connection or a timeout → retried with backoff;
authentication refused (535) → failed with the reason, the address untouched.

Marketing messages carry `List-Unsubscribe` (https, plus mailto when configured) and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058). Transactional messages carry
none: an opt-out does not stop them, so offering one would be a lie.
"""

from __future__ import annotations

import re
import secrets
import smtplib
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.errors import MessageError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from app.models.base import utcnow
from app.services import links
from workers.channels.base import Delivery, ProviderContext, Retry, SendResult, Suppress
from workers.channels.email_links import add_pixel, rewrite_links

# A connection idle longer than this is checked with NOOP before use (servers drop idle ones).
IDLE_CHECK_SECONDS = 20.0
DEFAULT_TIMEOUT_SECONDS = 30.0
# Reply codes at DATA that are about the message, not the mailbox: no suppression.
_MESSAGE_PROBLEMS = frozenset({552, 554})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]{2,}$")


class SmtpConfigError(ValueError):
    """SMTP_URL cannot be used."""


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to connect (parsed from SMTP_URL)."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None
    timeout: float


def parse_smtp_url(url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> SmtpServer:
    """`smtp[s]://[user:pass@]host[:port][?starttls=1]`; raises SmtpConfigError."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise SmtpConfigError(f"SMTP_URL: expected smtp:// or smtps://, got {parts.scheme!r}")
    if not parts.hostname:
        raise SmtpConfigError("SMTP_URL: no host")
    implicit = parts.scheme == "smtps"
    query = parse_qs(parts.query)
    starttls = query.get("starttls", ["0"])[-1].lower() in ("1", "true", "yes")
    if implicit and starttls:
        raise SmtpConfigError("SMTP_URL: smtps:// is TLS already; starttls=1 is for smtp://")
    try:
        port = parts.port or (465 if implicit else 587 if starttls else 25)
    except ValueError as err:
        raise SmtpConfigError(f"SMTP_URL: {err}") from None
    return SmtpServer(
        host=parts.hostname,
        port=port,
        implicit_tls=implicit,
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        timeout=timeout,
    )


# --- connections: one per worker thread and server ----------------------------------------


class _Pool:
    """One thread's open connections; closed with the thread (a worker stopping)."""

    def __init__(self) -> None:
        self.open: dict[SmtpServer, tuple[smtplib.SMTP, float]] = {}

    def __del__(self) -> None:
        # The thread is gone: no QUIT (it could block), just release the sockets.
        for smtp, _ in self.open.values():
            smtp.close()


class _Connections(threading.local):
    def __init__(self) -> None:
        self.pool = _Pool()


_connections = _Connections()


def _connect(server: SmtpServer) -> smtplib.SMTP:
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if server.implicit_tls:
        smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout, context=context)
    else:
        smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
    try:
        smtp.ehlo()
        if server.starttls:
            smtp.starttls(context=context)
            smtp.ehlo()
        if server.username:
            smtp.login(server.username, server.password or "")
    except BaseException:
        _close(smtp)
        raise
    return smtp


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except Exception:  # already gone: nothing to tell it
        smtp.close()


def _connection(server: SmtpServer) -> smtplib.SMTP:
    """This thread's open connection to `server` (checked if idle), or a new one."""
    held = _connections.pool.open.pop(server, None)
    if held is not None:
        smtp, last_used = held
        if time.monotonic() - last_used < IDLE_CHECK_SECONDS:
            return smtp
        try:
            if smtp.noop()[0] == 250:
                return smtp
        except (smtplib.SMTPException, OSError):
            pass
        _close(smtp)
    return _connect(server)


def _keep(server: SmtpServer, smtp: smtplib.SMTP) -> None:
    _connections.pool.open[server] = (smtp, time.monotonic())


def close_connections() -> None:
    """Close this thread's connections (tests, shutdown)."""
    for smtp, _ in _connections.pool.open.values():
        _close(smtp)
    _connections.pool.open.clear()


# --- the message ---------------------------------------------------------------------------


class _HeaderClasses(HeaderRegistry):
    """The stdlib registry builds a new class for every header it parses (a `type()` call,
    a third of the time spent building a message); this one builds each class once."""

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = super().__getitem__(name)
        return built


# Lines up to RFC 5322's hard limit: at the default 78 a List-Unsubscribe URL, one long word,
# would be folded into RFC 2047 encoded words that no mail client reads as a URL.
POLICY = default_policy.clone(header_factory=_HeaderClasses(), max_line_length=998)


class _BadSender(ValueError):
    pass


def _clean_address(value: Any, what: str) -> str:
    if not isinstance(value, str) or _CONTROL.search(value) or not _ADDRESS.match(value.strip()):
        raise _BadSender(f"{what}: not an email address: {value!r}"[:200])
    return value.strip()


def _clean_name(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    # A display name is quoted or encoded by the email package; control characters (a
    # header injection attempt or a stray newline) are dropped before it sees them.
    return _CONTROL.sub(" ", value).strip()[:200]


def _split(value: str) -> tuple[str, str]:
    """`Name <addr>` or `addr` → (name, addr)."""
    match = re.fullmatch(r"\s*(.*?)\s*<([^<>]+)>\s*", value)
    if match:
        return match.group(1).strip('"'), match.group(2)
    return "", value


@dataclass(frozen=True)
class Sender:
    """Who a message is from and where replies go."""

    address: str
    name: str
    reply_to: str | None


def sender_for(delivery: Delivery, ctx: ProviderContext) -> Sender:
    """The sender: the message's overrides, else the project's settings, else SMTP_FROM."""
    content = delivery.content
    override = delivery.overrides.get("email") if isinstance(delivery.overrides, dict) else None
    override = override if isinstance(override, Mapping) else {}
    project = ctx.project_settings.get("email") or {}

    sources: list[Mapping[str, Any]] = [
        content,
        override,
        project,
        {"from": ctx.settings.get("SMTP_FROM")},
    ]
    level = next((i for i, source in enumerate(sources) if source.get("from")), None)
    if level is None:
        raise _BadSender("no sender: set SMTP_FROM or the project's settings.email.from")
    embedded, address = _split(str(sources[level]["from"]))
    # A name given next to the address wins over a fromName of less specific settings.
    names = [s.get("fromName") for s in sources[: level + 1]] + [embedded]
    names += [s.get("fromName") for s in sources[level + 1 :]]
    name = _clean_name(next((n for n in names if n), ""))
    reply_to = next((s["replyTo"] for s in sources if s.get("replyTo")), None)
    return Sender(
        address=_clean_address(address, "from"),
        name=name,
        reply_to=_clean_address(reply_to, "replyTo") if reply_to else None,
    )


def _text_of(html_body: str) -> str:
    from inscriptis import get_text
    from inscriptis.model.config import ParserConfig

    text: str = get_text(html_body, ParserConfig(display_links=True))
    return text.strip() + "\n"


def _own_link_prefixes(settings: Mapping[str, Any]) -> tuple[str, ...]:
    base = settings["PUBLIC_URL"]
    return tuple(base + path for path in links.PATHS.values())


def _unsubscribe_mailto(ctx: ProviderContext) -> str | None:
    project = ctx.project_settings.get("email") or {}
    mailto = project.get("unsubscribeMailto") or ctx.settings.get("UNSUBSCRIBE_MAILTO")
    if not mailto:
        return None
    address = str(mailto).removeprefix("mailto:")
    return f"mailto:{_clean_address(address, 'unsubscribeMailto')}?subject=unsubscribe"


def build_message(delivery: Delivery, ctx: ProviderContext) -> tuple[EmailMessage, dict[str, Any]]:
    """The message to send and what to store as rendered; raises _BadSender."""
    settings = ctx.settings
    content = delivery.content
    sender = sender_for(delivery, ctx)
    subject = re.sub(r"[\r\n]+", " ", str(content.get("subject") or "")).strip()
    html_body = content.get("html") or None
    text_body = content.get("text") or (_text_of(html_body) if html_body else "")
    domain = sender.address.rpartition("@")[2]
    message_id = make_msgid(idstring=str(delivery.message_id), domain=domain)

    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(display_name=sender.name, addr_spec=sender.address)
    msg["To"] = Address(addr_spec=delivery.address)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id
    if sender.reply_to:
        msg["Reply-To"] = Address(addr_spec=sender.reply_to)
    unsubscribe: str | None = None
    if not delivery.transactional:
        https = links.unsubscribe_url(
            settings,
            project_id=delivery.project_id,
            channel=delivery.channel,
            address=delivery.address,
            message_id=delivery.message_id,
        )
        mailto = _unsubscribe_mailto(ctx)
        unsubscribe = f"<{https}>" + (f", <{mailto}>" if mailto else "")
        msg["List-Unsubscribe"] = unsubscribe
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text_body)
    tracked: str | None = None
    if html_body:
        tracked = rewrite_links(
            html_body,
            lambda target: links.click_url(settings, delivery.message_id, target),
            keep_prefixes=_own_link_prefixes(settings),
        )
        tracked = add_pixel(tracked, links.open_url(settings, delivery.message_id))
        msg.add_alternative(tracked, subtype="html")
        # Our own random boundary: without one the generator makes one and compiles a regex
        # per message to check the parts do not contain it (a millisecond each).
        msg.set_boundary(f"=_{secrets.token_hex(16)}")
    rendered: dict[str, Any] = {
        **{k: v for k, v in content.items() if k not in ("html", "text")},
        "subject": subject,
        "text": text_body,
        "from": str(msg["From"]),
        "to": delivery.address,
        "messageId": message_id.strip("<>"),
    }
    if tracked is not None:
        rendered["html"] = tracked
    if sender.reply_to:
        rendered["replyTo"] = sender.reply_to
    if unsubscribe:
        rendered["listUnsubscribe"] = unsubscribe
    return msg, rendered


# --- the provider --------------------------------------------------------------------------


def _reply(code: int, text: Any) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()[:500]


class SmtpProvider:
    """Sends email to the SMTP server of SMTP_URL."""

    name = "smtp"
    channels = frozenset({"email"})

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Send one message; transient failures raise Retry."""
        url = ctx.settings.get("SMTP_URL") or ""
        if not url:
            return SendResult("failed", "SMTP_URL is not set")
        try:
            server = parse_smtp_url(
                url, float(ctx.settings.get("SMTP_TIMEOUT_SECONDS") or DEFAULT_TIMEOUT_SECONDS)
            )
            msg, rendered = build_message(delivery, ctx)
        except (SmtpConfigError, _BadSender) as err:
            return SendResult("failed", str(err))
        except (ValueError, TypeError, MessageError) as err:  # an address the header refuses
            return SendResult("failed", f"cannot build the message: {err}"[:500])
        try:
            envelope_from = msg["From"].addresses[0].addr_spec
            self._transmit(server, msg, envelope_from, delivery.address)
        except smtplib.SMTPRecipientsRefused as err:
            code, text = next(iter(err.recipients.values()), (0, b"refused"))
            return self._refused(code, text, "recipient refused", bounce=True)
        except smtplib.SMTPDataError as err:
            bounce = err.smtp_code not in _MESSAGE_PROBLEMS
            return self._refused(err.smtp_code, err.smtp_error, "message refused", bounce=bounce)
        except smtplib.SMTPSenderRefused as err:
            return self._refused(err.smtp_code, err.smtp_error, "sender refused", bounce=False)
        except smtplib.SMTPAuthenticationError as err:
            return SendResult(
                "failed", f"SMTP authentication failed: {_reply(err.smtp_code, err.smtp_error)}"
            )
        except smtplib.SMTPNotSupportedError as err:
            return SendResult("failed", f"SMTP server: {err}")
        except ssl.SSLCertVerificationError as err:
            return SendResult("failed", f"SMTP TLS: {err.verify_message or err}")
        except smtplib.SMTPResponseException as err:
            return self._refused(err.smtp_code, err.smtp_error, "SMTP error", bounce=False)
        except (smtplib.SMTPException, OSError) as err:  # refused, reset, timed out, DNS
            raise Retry(f"SMTP {server.host}:{server.port}: {type(err).__name__}: {err}") from None
        return SendResult("sent", provider_id=rendered["messageId"], rendered=rendered)

    def _transmit(self, server: SmtpServer, msg: EmailMessage, envelope_from: str, to: str) -> None:
        """Send on this thread's connection; a connection dropped since is reopened once."""
        for attempt in (1, 2):
            smtp = _connection(server)
            try:
                smtp.send_message(msg, from_addr=envelope_from, to_addrs=[to])
            except smtplib.SMTPServerDisconnected:
                smtp.close()
                if attempt == 2:
                    raise
                continue
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):
                # The server answered and reset the transaction: the connection stays good.
                _keep(server, smtp)
                raise
            except BaseException:
                smtp.close()
                raise
            _keep(server, smtp)
            return

    @staticmethod
    def _refused(code: int, text: Any, what: str, *, bounce: bool) -> SendResult:
        reason = f"{what}: {_reply(code, text)}"
        if 400 <= code < 500:
            raise Retry(reason)
        if bounce and 500 <= code < 600:
            return SendResult("failed", reason, effects=(Suppress("bounce"),))
        return SendResult("failed", reason)
