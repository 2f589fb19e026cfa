"""POST /webhooks/email/{provider}: bounces and complaints that arrive after the send.

`generic`: `{type: "bounce"|"complaint", email, messageId?, bounceType?: "hard"|"soft"}`
signed with EMAIL_WEBHOOK_SECRET: `X-Cairn-Signature: sha256=<hex HMAC-SHA256>` of the raw
body, or, with `X-Cairn-Timestamp: <unix seconds>`, of `<timestamp>.<raw body>` (then refused
beyond 5 minutes, against replays). `ses`: Amazon SNS notifications of SES (Bounce,
Complaint, Delivery), verified against the SNS signing certificate; a SubscriptionConfirmation is
confirmed by visiting its SubscribeURL.

The URL names no project: the message a report is about is found by its Message-ID (which
the smtp provider stores as the provider id), else it is the latest email sent to the
address (see `engagement.find_email_message`). A hard bounce suppresses the address
(`bounce`), a complaint opts it out of marketing (`complaint`), a soft bounce is only
recorded, a delivery moves a `sent` message to `delivered`. Unsigned reports are refused
with 401, badly signed ones with 403: never applied.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import current_app, request
from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.db import db
from app.errors import BadRequest, Forbidden, InvalidInput, NotFound, TooLarge, Unauthorized
from app.services import engagement, sns
from app.services.engagement import Feedback
from app.services.profiles import FieldError, normalize_email

blp = Blueprint("email_webhooks", __name__, description="Email bounce and complaint webhooks")

MAX_BODY_BYTES = 256 * 1024
TIMESTAMP_TOLERANCE_SECONDS = 300
SIGNATURE = "X-Cairn-Signature"
TIMESTAMP = "X-Cairn-Timestamp"


def _raw_body() -> bytes:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise TooLarge("Request body too large")
    body = request.get_data(cache=True)
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge("Request body too large")
    return body


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise BadRequest("Malformed JSON", {"body": ["not valid JSON"]}) from None


def _email(value: Any, field: str) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidInput(f"Invalid input: {field}", {field: ["an email address"]})
    try:
        return normalize_email(value)
    except FieldError as err:
        raise InvalidInput(f"Invalid input: {field}", {field: [str(err)]}) from None


# --- generic ---------------------------------------------------------------------------------


def check_generic_signature(
    secret: str, body: bytes, signature: str | None, timestamp: str | None, now: float
) -> None:
    """Raise Unauthorized/Forbidden unless `signature` signs `body` (and a fresh timestamp)."""
    if not signature:
        raise Unauthorized(f"{SIGNATURE} is required")
    if not secret:
        raise Forbidden("EMAIL_WEBHOOK_SECRET is not set: reports cannot be verified")
    signed = body
    if timestamp is not None:
        if not timestamp.isdigit() or abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS:
            raise Forbidden(f"{TIMESTAMP} is not within 5 minutes of now")
        signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.strip()):
        raise Forbidden(f"{SIGNATURE} does not match the body")


def _generic(body: bytes) -> list[Feedback]:
    check_generic_signature(
        current_app.config.get("EMAIL_WEBHOOK_SECRET") or "",
        body,
        request.headers.get(SIGNATURE),
        request.headers.get(TIMESTAMP),
        time.time(),
    )
    data = _json(body)
    if not isinstance(data, dict):
        raise InvalidInput("Invalid input: body", {"body": ["a JSON object"]})
    kind = data.get("type")
    if kind not in ("bounce", "complaint"):
        raise InvalidInput("Invalid input: type", {"type": ["bounce or complaint"]})
    bounce_type = data.get("bounceType", "hard")
    if bounce_type not in ("hard", "soft"):
        raise InvalidInput("Invalid input: bounceType", {"bounceType": ["hard or soft"]})
    message_id = data.get("messageId")
    if message_id is not None and (not isinstance(message_id, str) or len(message_id) > 998):
        raise InvalidInput("Invalid input: messageId", {"messageId": ["a Message-ID"]})
    if kind == "bounce" and bounce_type == "soft":
        kind = "soft_bounce"
    return [Feedback(kind, _email(data.get("email"), "email"), message_id, {"source": "generic"})]


# --- Amazon SES through SNS ------------------------------------------------------------------


def _message_id_header(mail: Mapping[str, Any]) -> str | None:
    common = mail.get("commonHeaders")
    if isinstance(common, Mapping) and isinstance(common.get("messageId"), str):
        return str(common["messageId"])
    for header in mail.get("headers") or []:
        if isinstance(header, Mapping) and str(header.get("name", "")).lower() == "message-id":
            return str(header.get("value") or "") or None
    return None


def ses_feedback(notification: Any) -> list[Feedback]:
    """The bounces and complaints in an SES notification (other types: none)."""
    if not isinstance(notification, Mapping):
        return []
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail")
    header = _message_id_header(mail) if isinstance(mail, Mapping) else None
    if kind == "Bounce":
        report = notification.get("bounce") or {}
        bounce_type = report.get("bounceType")
        key, recipients = (
            ("bounce" if bounce_type == "Permanent" else "soft_bounce"),
            report.get("bouncedRecipients"),
        )
        detail = {
            "source": "ses",
            "bounceType": bounce_type,
            "subType": report.get("bounceSubType"),
        }
    elif kind == "Complaint":
        report = notification.get("complaint") or {}
        if report.get("complaintFeedbackType") == "not-spam":
            return []
        key, recipients = "complaint", report.get("complainedRecipients")
        detail = {"source": "ses", "feedbackType": report.get("complaintFeedbackType")}
    elif kind == "Delivery":
        report = notification.get("delivery") or {}
        key, recipients = "delivered", [{"emailAddress": r} for r in report.get("recipients") or []]
        detail = {"source": "ses", "smtpResponse": str(report.get("smtpResponse") or "")[:300]}
    else:
        return []
    out = []
    for recipient in recipients if isinstance(recipients, list) else []:
        raw = recipient.get("emailAddress") if isinstance(recipient, Mapping) else None
        try:
            address = normalize_email(raw) if isinstance(raw, str) else None
        except FieldError:
            address = None
        if address is not None:
            out.append(Feedback(key, address, header, detail))
    return out


def _ses(body: bytes) -> list[Feedback]:
    allow_private = bool(current_app.config.get("ALLOW_PRIVATE_ENDPOINTS"))
    try:
        message = json.loads(body)
    except ValueError:
        raise Unauthorized("not an SNS message") from None
    try:
        sns.verify(message, allow_private=allow_private)
    except sns.SnsError as err:
        raise (Unauthorized if err.unsigned else Forbidden)(str(err)) from None
    if message["Type"] == "SubscriptionConfirmation":
        try:
            sns.confirm_subscription(message, allow_private=allow_private)
        except sns.SnsError as err:
            raise BadRequest(str(err)) from None
        return []
    if message["Type"] != "Notification":
        return []
    try:
        notification = json.loads(message.get("Message") or "")
    except ValueError:
        return []
    return ses_feedback(notification)


PROVIDERS: dict[str, Callable[[bytes], list[Feedback]]] = {"generic": _generic, "ses": _ses}

OK_SCHEMA = {
    "type": "object",
    "required": ["ok", "applied"],
    "properties": {
        "ok": {"type": "boolean"},
        "applied": {
            "type": "integer",
            "minimum": 0,
            "description": "reports matched to a message of ours and applied",
        },
    },
}


@blp.route("/webhooks/email/<provider>")
class EmailWebhook(MethodView):
    """Bounce and complaint reports of an email provider."""

    @blp.doc(
        security=[{}],
        parameters=[
            {
                "name": "provider",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(PROVIDERS)},
            },
            {
                "name": SIGNATURE,
                "in": "header",
                "schema": {"type": "string"},
                "description": "generic: `sha256=<hex HMAC-SHA256 of the signed text>`",
            },
            {
                "name": TIMESTAMP,
                "in": "header",
                "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
                "description": "generic: unix seconds; signs `<timestamp>.<body>`, ±5 min",
            },
        ],
        requestBody={
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "description": "generic: one report (ses: an SNS message)",
                        "type": "object",
                        "required": ["type", "email"],
                        "properties": {
                            "type": {"type": "string", "enum": ["bounce", "complaint"]},
                            "email": {"type": "string", "format": "email"},
                            "messageId": {"type": "string", "maxLength": 998},
                            "bounceType": {"type": "string", "enum": ["hard", "soft"]},
                        },
                    }
                },
                "text/plain": {
                    "schema": {"type": "string", "description": "ses: the SNS message JSON"}
                },
            },
        },
        responses={
            "200": {
                "description": "Verified; `applied` reports matched one of our messages",
                "content": {"application/json": {"schema": OK_SCHEMA}},
            },
            "400": {"$ref": "#/components/responses/DEFAULT_ERROR"},
            "401": {"$ref": "#/components/responses/DEFAULT_ERROR"},
            "403": {"$ref": "#/components/responses/DEFAULT_ERROR"},
            "404": {"$ref": "#/components/responses/DEFAULT_ERROR"},
            "413": {"$ref": "#/components/responses/DEFAULT_ERROR"},
            "422": {"$ref": "#/components/responses/DEFAULT_ERROR"},
        },
    )
    def post(self, provider: str) -> tuple[dict[str, Any], int]:
        """Verify the report's signature, then apply it (idempotent: a repeat changes nothing)."""
        handler = PROVIDERS.get(provider)
        if handler is None:
            raise NotFound(f"unknown email webhook provider; known: {', '.join(PROVIDERS)}")
        reports = handler(_raw_body())
        applied = sum(
            1 for report in reports if engagement.record_feedback(db.session, report) is not None
        )
        return {"ok": True, "applied": applied}, 200
