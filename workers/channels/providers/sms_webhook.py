"""A generic SMS gateway: a signed JSON POST to SMS_WEBHOOK_URL, for any other provider.

The body is `{"messageId", "to", "body", "segments", "statusCallback"}` (`messageId` is
Cairn's message id, a string; `statusCallback` is `{PUBLIC_URL}/webhooks/sms/status`, where
the gateway reports deliveries, see app/api/sms_webhooks.py) and two headers let the gateway
check it came from us:

    X-Cairn-Timestamp: <unix seconds>
    X-Cairn-Signature: sha256=<hex HMAC-SHA256(SMS_WEBHOOK_SECRET, timestamp + "." + raw body)>

Signing the timestamp with the body lets a gateway refuse replays (say, older than five
minutes). 2xx → sent (the provider id is the answer's JSON `id` when it has one); 429 and 5xx
→ retry (after Retry-After when given), as do connection errors and timeouts; any other answer
(redirects are not followed) → failed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests

from workers.channels.base import Delivery, ProviderContext, SendResult
from workers.channels.providers.twilio import TIMEOUT, pooled_session, retry_after
from workers.channels.sms import segments

SIGNATURE_HEADER = "X-Cairn-Signature"
TIMESTAMP_HEADER = "X-Cairn-Timestamp"
STATUS_PATH = "/webhooks/sms/status"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Cairn-Signature value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class SmsWebhookProvider:
    """POSTs each SMS as signed JSON to the configured gateway."""

    name = "webhook"
    channels = frozenset({"sms"})

    def __init__(self) -> None:
        self._session = pooled_session()

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Hand the message to the gateway; the outcome follows the module's table."""
        url = str(ctx.settings.get("SMS_WEBHOOK_URL") or "")
        secret = str(ctx.settings.get("SMS_WEBHOOK_SECRET") or "")
        if not url or not secret:
            return SendResult(
                "failed", "webhook: SMS_WEBHOOK_URL and SMS_WEBHOOK_SECRET are required"
            )
        text = str(delivery.content.get("body") or "")
        count = segments(text)
        payload = {
            "messageId": str(delivery.message_id),
            "to": delivery.address,
            "body": text,
            "segments": count,
            "statusCallback": str(ctx.settings.get("PUBLIC_URL") or "").rstrip("/") + STATUS_PATH,
        }
        raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, raw),
        }
        try:
            response = self._session.post(
                url, data=raw, headers=headers, timeout=TIMEOUT, allow_redirects=False
            )
        except requests.RequestException as err:
            return SendResult("retry", f"webhook: {type(err).__name__}", segments=count)
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(
                "sent",
                provider_id=_answer_id(response),
                rendered=dict(delivery.content),
                segments=count,
            )
        reason = f"webhook HTTP {status}: {(response.text or response.reason or '')[:200]}"
        if status == 429 or status >= 500:
            return SendResult(
                "retry",
                reason,
                retry_after=retry_after(response.headers.get("Retry-After")),
                segments=count,
            )
        return SendResult("failed", reason, segments=count)


def _answer_id(response: requests.Response) -> str | None:
    """The gateway's own id for the message, if its answer is a JSON object with `id`."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("id") is not None:
        return str(body["id"])[:255]
    return None
