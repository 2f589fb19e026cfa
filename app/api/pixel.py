"""GET /v1/pixel.gif: a 1×1 GIF that records an event; it never breaks a page."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, request
from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.bodies import find_nul
from app.api.events import limits
from app.api.guard import PUBLISHABLE, credential_from_request, resolve_principal, verification
from app.db import db
from app.errors import DomainError
from app.services.events import parse_events, track_events
from app.services.profiles import MAX_ID_LENGTH

log = logging.getLogger(__name__)
blp = Blueprint("pixel", __name__, url_prefix="/v1", description="Tracking pixel")

GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def _gif(recorded: bool) -> Response:
    response = Response(GIF, mimetype="image/gif")
    response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate, max-age=0"
    response.headers["Pragma"] = "no-cache"
    response.headers["Expires"] = "0"
    # Lets a site's own tests see whether the hit counted without breaking the image.
    response.headers["X-Cairn-Recorded"] = "1" if recorded else "0"
    return response


PARAMETERS = {
    "key": "publishable key (pk_...); a secret key is never taken from a URL",
    "event": "event name, 1-255 characters",
    "userId": "1-255 characters",
    "anonymousId": "1-255 characters",
    "messageId": "idempotency key, 1-255 characters",
    "timestamp": "ISO 8601 (as on /v1/events), default now",
    "userHash": "hex HMAC-SHA256(identity secret, userId)",
}


@blp.route("/pixel.gif")
class Pixel(MethodView):
    """Record `?event=` for `?userId=` or `?anonymousId=`, properties as `p.<name>=`.

    Invalid or unauthenticated hits answer the same GIF, only not recorded: a broken pixel
    must never break a page.
    """

    @blp.doc(
        # The key is in the URL (an <img> sends no header); without a valid one the hit is
        # simply not recorded.
        security=[{}],
        parameters=[
            {"name": name, "in": "query", "schema": {"type": "string"}, "description": about}
            for name, about in PARAMETERS.items()
        ]
        + [
            {
                "name": "properties",
                "in": "query",
                "style": "form",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "`p.<name>=<value>` are the event's properties; any other "
                "parameter is ignored",
            }
        ],
        responses={
            "200": {
                "description": "Always this 1×1 GIF, recorded or not",
                "headers": {
                    "X-Cairn-Recorded": {
                        "description": "1 when the hit was recorded as an event",
                        "schema": {"type": "string", "enum": ["0", "1"]},
                    }
                },
                "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    def get(self):
        """Always a 1×1 GIF with no-cache headers."""
        try:
            return _gif(self._record())
        except Exception:  # a broken pixel must never break a page
            log.exception("pixel hit not recorded")
            db.session.rollback()
            return _gif(False)

    def _record(self) -> bool:
        args = request.args
        try:
            # Only a publishable key is taken from the URL (a secret key there is refused).
            principal = resolve_principal(credential_from_request(allow_query=True))
            if principal.kind != PUBLISHABLE:
                return False
            user_id = args.get("userId") or None
            if user_id is not None and len(user_id) <= MAX_ID_LENGTH:
                verification(principal).check(user_id, args.get("userHash"))
        except DomainError:
            return False
        item: dict[str, Any] = {"name": args.get("event")}
        for name in ("userId", "anonymousId", "messageId", "timestamp"):
            if args.get(name):
                item[name] = args[name]
        properties = {k[2:]: v for k, v in args.items() if k.startswith("p.") and len(k) > 2}
        if properties:
            item["properties"] = properties
        if find_nul(item) is not None:
            return False
        batch = parse_events([item], limits=limits(), check_size=True)
        if not batch.good:
            return False
        event = batch.events[0]
        event.source = "pixel"
        track_events(db.session, project_id=principal.project_id, events=[event])
        return True
