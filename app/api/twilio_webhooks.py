"""Twilio's callbacks: POST /webhooks/twilio/status (delivery reports) and /inbound (replies).

Both are signed by Twilio (`X-Twilio-Signature`, checked against TWILIO_AUTH_TOKEN over the
URL Twilio called, `PUBLIC_URL` + path + query, since behind a proxy Flask sees another one).
A missing or wrong signature is a 403 and nothing is applied. They are left out of
/openapi.json: their form bodies carry a signature no generic client can make, and they are
Twilio's interface, not Cairn's API.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.db import db
from app.errors import Forbidden
from app.models.base import utcnow
from app.services.sms import apply_twilio_status, handle_inbound, twilio_signature_valid, twiml

SIGNATURE_HEADER = "X-Twilio-Signature"


class UndocumentedBlueprint(Blueprint):
    """A blueprint whose routes stay out of the OpenAPI document."""

    def register_views_in_doc(self, *args: Any, **kwargs: Any) -> None:
        """Document nothing."""


blp = UndocumentedBlueprint(
    "twilio_webhooks",
    __name__,
    url_prefix="/webhooks/twilio",
    description="Twilio's signed callbacks: /webhooks/twilio/status and /inbound (not listed)",
)


def _signed_params() -> list[tuple[str, str]]:
    """The POST parameters, once the signature over them has been checked (403 otherwise)."""
    token = str(current_app.config.get("TWILIO_AUTH_TOKEN") or "")
    if not token:
        raise Forbidden(
            "Twilio callbacks cannot be verified: TWILIO_AUTH_TOKEN is not set",
            {SIGNATURE_HEADER: ["cannot be checked"]},
        )
    url = current_app.config["PUBLIC_URL"] + request.path
    if request.query_string:
        url += "?" + request.query_string.decode("utf-8", "replace")
    params = list(request.form.items(multi=True))
    if not twilio_signature_valid(token, url, params, request.headers.get(SIGNATURE_HEADER)):
        raise Forbidden(
            "bad or missing Twilio signature", {SIGNATURE_HEADER: ["does not match the request"]}
        )
    return params


def _twiml(message: str | None = None) -> Response:
    return Response(twiml(message), status=200, mimetype="text/xml")


@blp.route("/status")
class TwilioStatus(MethodView):
    """A delivery report for a message sent with the `twilio` provider."""

    def post(self) -> Response:
        """Move the message to delivered or failed (never backwards); 204."""
        params = dict(_signed_params())
        apply_twilio_status(db.session, params=params, now=utcnow(), message_id=_our_message_id())
        return Response(status=204)


def _our_message_id() -> int | None:
    """Our message id from the StatusCallback URL we gave Twilio (`?m=`), if well formed."""
    raw = request.args.get("m", "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw) or None


@blp.route("/inbound")
class TwilioInbound(MethodView):
    """An SMS sent to one of the project's numbers."""

    def post(self) -> Response:
        """STOP opts the sender out, START back in, HELP is answered; TwiML."""
        params = dict(_signed_params())
        reply = handle_inbound(
            db.session,
            sender=params.get("From", ""),
            to=params.get("To", ""),
            body=params.get("Body", ""),
            now=utcnow(),
        )
        return _twiml(reply)
