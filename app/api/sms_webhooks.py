"""The generic SMS gateway's callbacks: POST /webhooks/sms/status and /webhooks/sms/inbound.

A gateway behind the `webhook` provider reports deliveries and forwards replies as JSON,
signed like our requests to it (`X-Cairn-Timestamp`, `X-Cairn-Signature: sha256=<hex
HMAC-SHA256(SMS_WEBHOOK_SECRET, timestamp + "." + raw body)>`, within five minutes):

    status:  {"messageId": "<the id we sent>", "status": "delivered" | "failed",
              "reason"?: "...", "suppress"?: "stop" | "invalid"}      → 204
    inbound: {"from": "+1...", "to": "+1...", "body": "STOP"}          → 200 {"reply": str|null}

`suppress` marks a failure that means the number must not be tried again. Inbound keywords
work as for Twilio (app/services/sms.py); `reply` is the text to answer with (HELP), if any.
Left out of /openapi.json like Twilio's callbacks: no generic client can sign them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Response, current_app, jsonify, request
from flask.views import MethodView

from app.api.twilio_webhooks import UndocumentedBlueprint
from app.db import db
from app.errors import BadRequest, Forbidden, InvalidInput
from app.models.base import utcnow
from app.services.sms import apply_gateway_status, gateway_signature_problem, handle_inbound

blp = UndocumentedBlueprint(
    "sms_webhooks",
    __name__,
    url_prefix="/webhooks/sms",
    description="SMS gateway signed callbacks: /webhooks/sms/status and /inbound (not listed)",
)

STATUSES = ("delivered", "failed")
SUPPRESS = ("stop", "invalid")
MAX_TEXT = 1600


def _signed_json() -> dict[str, Any]:
    """The body as a JSON object, once its signature has been checked (403 otherwise)."""
    raw = request.get_data(cache=True)
    problem = gateway_signature_problem(
        str(current_app.config.get("SMS_WEBHOOK_SECRET") or ""),
        request.headers.get("X-Cairn-Timestamp"),
        raw,
        request.headers.get("X-Cairn-Signature"),
        time.time(),
    )
    if problem is not None:
        raise Forbidden(problem, {"X-Cairn-Signature": [problem]})
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON", {"body": ["malformed JSON"]}) from None
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object", {"body": ["expected an object"]})
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
        raise InvalidInput(f"{name}: expected a string", {name: [f"a string ≤{MAX_TEXT} chars"]})
    return value


def _choice(body: dict[str, Any], name: str, options: tuple[str, ...], required: bool) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if value not in options:
        raise InvalidInput(f"{name}: one of {', '.join(options)}", {name: ["not a known value"]})
    return value


@blp.route("/status")
class GatewayStatus(MethodView):
    """A delivery report for a message sent with the `webhook` provider."""

    def post(self) -> Response:
        """Move the message to delivered or failed (never backwards); 204."""
        body = _signed_json()
        raw_id = body.get("messageId")
        try:
            ok = isinstance(raw_id, int | str) and not isinstance(raw_id, bool)
            message_id = int(raw_id) if ok and raw_id is not None else None
        except ValueError:
            message_id = None
        if message_id is None or not 0 < message_id < 2**63:
            raise InvalidInput("messageId: expected the id Cairn sent", {"messageId": ["invalid"]})
        apply_gateway_status(
            db.session,
            message_id=message_id,
            status=_choice(body, "status", STATUSES, True),
            reason=_text(body, "reason", required=False),
            suppress=_choice(body, "suppress", SUPPRESS, False),
            now=utcnow(),
        )
        return Response(status=204)


@blp.route("/inbound")
class GatewayInbound(MethodView):
    """An SMS the gateway received for one of the project's numbers."""

    def post(self) -> Response:
        """STOP opts the sender out, START back in; `reply` answers HELP."""
        body = _signed_json()
        reply = handle_inbound(
            db.session,
            sender=_text(body, "from") or "",
            to=_text(body, "to") or "",
            body=_text(body, "body") or "",
            now=utcnow(),
        )
        return jsonify({"reply": reply})
