"""Twilio: SMS through the Programmable Messaging API (form-encoded POST, Basic auth).

`POST {TWILIO_BASE_URL}/2010-04-01/Accounts/{sid}/Messages.json` with `To`, `From` (the
project's `settings.sms.from`, else TWILIO_FROM) and/or `MessagingServiceSid`, `Body` and a
`StatusCallback` at `{PUBLIC_URL}/webhooks/twilio/status?m=<our message id>`, where delivery
reports arrive (app/api/twilio_webhooks.py; the id finds a report that outruns our record of
the sid). 201 → sent with Twilio's `sid` as the provider id; 429 and 5xx
→ retry (after Retry-After when given), as do connection errors and timeouts; 401 → failed
(`auth`); other 4xx → failed with Twilio's code and message, no retry. Two codes also suppress
the number: 21610 (the recipient replied STOP) and 21211/21614 (not a valid / not a mobile
number), as a hard bounce does for email.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from workers.channels.base import Delivery, ProviderContext, SendResult, Suppress
from workers.channels.sms import segments

log = logging.getLogger(__name__)

# (connect, read) seconds: a slow API must not hold a worker thread for long.
TIMEOUT = (5.0, 20.0)
STATUS_PATH = "/webhooks/twilio/status"
# Twilio error code -> the suppression reason it implies (the number must not be tried again).
SUPPRESSING_CODES = {21610: "stop", 21211: "invalid", 21614: "invalid"}
MAX_REASON = 300


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def pooled_session(pool: int = 16) -> requests.Session:
    """A `requests` session with a connection pool big enough for the worker threads."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _error(response: requests.Response) -> tuple[int | None, str]:
    """Twilio's error `code` and `message` from a JSON error body (None, text otherwise)."""
    try:
        body = response.json()
    except ValueError:
        return None, (response.text or response.reason or "")[:200]
    if not isinstance(body, dict):
        return None, str(body)[:200]
    code = body.get("code")
    return (code if isinstance(code, int) else None), str(body.get("message") or "")[:200]


def status_callback(settings: Mapping[str, Any], message_id: int) -> str:
    """Where Twilio reports on this message: our id rides in the URL (which Twilio signs), so
    a report that arrives before the sid is recorded still finds its message."""
    return f"{str(settings.get('PUBLIC_URL') or '').rstrip('/')}{STATUS_PATH}?m={message_id}"


class TwilioProvider:
    """Sends SMS with one pooled HTTP session per process."""

    name = "twilio"
    channels = frozenset({"sms"})

    def __init__(self) -> None:
        # requests' connection pool is thread-safe; the worker threads share it.
        self._session = pooled_session()

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Create the message at Twilio; the outcome follows the module's table."""
        settings = ctx.settings
        sid = str(settings.get("TWILIO_ACCOUNT_SID") or "")
        token = str(settings.get("TWILIO_AUTH_TOKEN") or "")
        if not sid or not token:
            return SendResult(
                "failed", "twilio: TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required"
            )
        sms_settings = ctx.project_settings.get("sms") or {}
        # Stored under the schema's attribute name; `from` for settings written by hand.
        sender = str(sms_settings.get("fromNumber") or sms_settings.get("from") or "")
        sender = sender or str(settings.get("TWILIO_FROM") or "")
        service = str(settings.get("TWILIO_MESSAGING_SERVICE_SID") or "")
        if not sender and not service:
            return SendResult(
                "failed",
                "twilio: no sender (settings.sms.from, TWILIO_FROM or "
                "TWILIO_MESSAGING_SERVICE_SID)",
            )
        body = str(delivery.content.get("body") or "")
        form: dict[str, str] = {"To": delivery.address, "Body": body}
        if sender:
            form["From"] = sender
        if service:
            form["MessagingServiceSid"] = service
        form["StatusCallback"] = status_callback(settings, delivery.message_id)
        base = str(settings.get("TWILIO_BASE_URL") or "https://api.twilio.com").rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{sid}/Messages.json"
        count = segments(body)
        try:
            response = self._session.post(
                url, data=form, auth=(sid, token), timeout=TIMEOUT, allow_redirects=False
            )
        except requests.RequestException as err:
            return SendResult("retry", f"twilio: {type(err).__name__}", segments=count)
        return self._outcome(response, delivery, count)

    def _outcome(self, response: requests.Response, delivery: Delivery, count: int) -> SendResult:
        status = response.status_code
        if status in (200, 201):
            try:
                payload = response.json()
            except ValueError:
                payload = {}
            sid = payload.get("sid") if isinstance(payload, dict) else None
            return SendResult(
                "sent",
                provider_id=str(sid) if sid else None,
                rendered=dict(delivery.content),
                segments=count,
            )
        code, message = _error(response)
        label = f"twilio {code}" if code is not None else f"twilio HTTP {status}"
        reason = f"{label}: {message}"[:MAX_REASON] if message else label
        if status == 429 or status >= 500:
            wait = retry_after(response.headers.get("Retry-After"))
            return SendResult("retry", reason, retry_after=wait, segments=count)
        if status == 401:
            return SendResult(
                "failed", "auth: Twilio refused the account SID or token", segments=count
            )
        suppress = SUPPRESSING_CODES.get(code) if code is not None else None
        effects = (Suppress(suppress),) if suppress else ()
        return SendResult("failed", reason, effects=effects, segments=count)
