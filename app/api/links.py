"""The signed links inside emails: open pixel, click redirect, one-click unsubscribe.

Not JSON API routes: a mail client or a person follows them, with no key. A token that is not
ours never redirects and never changes anything: the pixel still answers its GIF (a broken
image helps nobody), the others a small HTML page with 404. `GET /u/{token}` only shows a
confirmation (link scanners prefetch every link of an email); the `POST` unsubscribes at
once, and is what RFC 8058 one-click clients send (`List-Unsubscribe=One-Click`).
"""

from __future__ import annotations

import html
import logging
from typing import Any

from flask import Response, current_app, redirect, request
from flask.views import MethodView

from app.api.blueprint import Blueprint
from app.api.pixel import GIF
from app.db import db
from app.models import Project
from app.services import engagement, links

log = logging.getLogger(__name__)
blp = Blueprint("links", __name__, description="Tracking and unsubscribe links in emails")

NO_STORE = "no-cache, no-store, must-revalidate, max-age=0"
TOKEN = {
    "name": "token",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "signed by Cairn; anything else is refused",
}
HTML_PAGE = {"text/html": {"schema": {"type": "string"}}}
NOT_OURS = {"description": "Not a valid link: nothing changed", "content": HTML_PAGE}


def _payload(kind: str, token: str) -> dict[str, Any] | None:
    """The token's payload if Cairn signed it for `kind`, else None."""
    try:
        payload = links.verify(current_app.config["SECRET_KEY"], kind, token)
    except links.BadToken:
        return None
    return payload if isinstance(payload, dict) else None


def _visit() -> engagement.Visit:
    return engagement.Visit(
        user_agent=request.headers.get("User-Agent", ""), ip=request.remote_addr
    )


def _page(title: str, body: str, status: int = 200) -> Response:
    document = (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
        "padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.5rem 1rem}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    response = Response(document, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = NO_STORE
    return response


def _not_ours() -> Response:
    return _page("Link not valid", "<p>This link is not valid. Nothing was changed.</p>", 404)


def _message_id(payload: dict[str, Any] | None) -> int | None:
    value = (payload or {}).get("m")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@blp.route("/t/o/<token>.gif")
class OpenPixel(MethodView):
    """The open pixel of an email."""

    @blp.doc(
        security=[{}],
        parameters=[TOKEN],
        responses={
            "200": {
                "description": "Always this 1×1 GIF, recorded or not",
                "headers": {
                    "X-Cairn-Recorded": {
                        "description": "1 when the fetch was recorded (an open or a machine's)",
                        "schema": {"type": "string", "enum": ["0", "1"]},
                    }
                },
                "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    def get(self, token: str) -> Response:
        """Record an open (once per message; a prefetcher's as `machine_open`)."""
        recorded = False
        message_id = _message_id(_payload("open", token))
        if message_id is not None:
            try:
                kind = engagement.record_open(db.session, message_id=message_id, visit=_visit())
                db.commit_request()
                recorded = kind is not None
            except Exception:  # a pixel never breaks an email
                log.exception("open of message %s not recorded", message_id)
                db.session.rollback()
        response = Response(GIF, mimetype="image/gif")
        response.headers["Cache-Control"] = NO_STORE
        response.headers["Pragma"] = "no-cache"
        response.headers["X-Cairn-Recorded"] = "1" if recorded else "0"
        return response


@blp.route("/t/c/<token>")
class Click(MethodView):
    """A tracked link of an email."""

    @blp.doc(
        security=[{}],
        parameters=[TOKEN],
        responses={
            "302": {
                "description": "To the link's signed target, and only there",
                "headers": {
                    "Location": {"schema": {"type": "string", "format": "uri"}},
                },
            },
            "404": NOT_OURS,
        },
    )
    def get(self, token: str) -> Any:
        """Record the click (once per message) and redirect to the signed target."""
        payload = _payload("click", token)
        target = (payload or {}).get("u")
        message_id = _message_id(payload)
        if (
            not isinstance(target, str)
            or not target.lower().startswith(("http://", "https://"))
            or message_id is None
        ):
            return _not_ours()
        try:
            engagement.record_click(
                db.session, message_id=message_id, target=target, visit=_visit()
            )
            db.commit_request()
        except Exception:  # the person still gets where the link goes
            log.exception("click of message %s not recorded", message_id)
            db.session.rollback()
        response = redirect(target, code=302)
        response.headers["Cache-Control"] = NO_STORE
        return response


def _unsubscribe_target(token: str) -> tuple[int, str, str, int | None] | None:
    payload = _payload("unsubscribe", token)
    if payload is None:
        return None
    project_id, channel, address = payload.get("p"), payload.get("c"), payload.get("a")
    if not isinstance(project_id, int) or not isinstance(channel, str):
        return None
    if not isinstance(address, str) or not address:
        return None
    return project_id, channel, address, _message_id(payload)


@blp.route("/u/<token>")
class Unsubscribe(MethodView):
    """One-click unsubscribe from marketing (RFC 8058)."""

    @blp.doc(
        security=[{}],
        parameters=[TOKEN],
        responses={
            "200": {"description": "A confirmation page; nothing changed", "content": HTML_PAGE},
            "404": NOT_OURS,
        },
    )
    def get(self, token: str) -> Response:
        """A page asking to confirm: changes nothing (mail scanners fetch every link)."""
        target = _unsubscribe_target(token)
        if target is None:
            return _not_ours()
        _, channel, address, _ = target
        return _page(
            "Unsubscribe",
            f"<p>Stop marketing {html.escape(channel)} to <b>{html.escape(address)}</b>?</p>"
            '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    @blp.doc(
        security=[{}],
        parameters=[TOKEN],
        requestBody={
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}
                        },
                    }
                }
            },
        },
        responses={
            "200": {"description": "Unsubscribed (or already)", "content": HTML_PAGE},
            "404": NOT_OURS,
        },
    )
    def post(self, token: str) -> Response:
        """Unsubscribe at once (the form above, or a mail client's one-click POST)."""
        target = _unsubscribe_target(token)
        if target is None:
            return _not_ours()
        project_id, channel, address, message_id = target
        if db.session.get(Project, project_id) is None:
            return _not_ours()
        try:
            engagement.unsubscribe(
                db.session,
                project_id=project_id,
                channel=channel,
                address=address,
                message_id=message_id,
            )
        except ValueError:
            return _not_ours()
        return _page(
            "You are unsubscribed",
            f"<p><b>{html.escape(address)}</b> will get no more marketing "
            f"{html.escape(channel)} from us.</p>",
        )
