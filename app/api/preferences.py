"""`/p/{token}`: the preference page a person reaches from any message (`{{ preferences_url }}`).

A small server-rendered page, not a JSON API route: kept out of /openapi.json (its form's
fields are the project's topics). `GET` shows the choices and changes nothing (link scanners
fetch every link in an email); `POST` (a form) saves them and shows the page again. A token
Cairn did not sign, or for a person deleted since, is a 404 page; never a 500.
"""

from __future__ import annotations

from typing import Any

import flask
from flask import Response, current_app, render_template, request

from app.api.blueprint import Blueprint
from app.db import db
from app.errors import NotFound
from app.models.base import utcnow
from app.services import preferences
from app.services.preferences import PageState

blp = Blueprint("preferences", __name__, description="The preference page")

NO_STORE = "no-cache, no-store, must-revalidate, max-age=0"


def _page(state: PageState | None, *, saved: bool = False, status: int = 200) -> Response:
    body = render_template(
        "preferences.html",
        title="Your preferences" if state is not None else "Link not valid",
        state=state,
        saved=saved,
    )
    response = Response(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = NO_STORE
    response.headers["X-Robots-Tag"] = "noindex"
    # The page is never framed (clickjacking a one-click "no marketing" is still a change).
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    )
    return response


def _resolve(token: str) -> tuple[Any, Any]:
    return preferences.resolve_token(
        db.session, secret=current_app.config["SECRET_KEY"], token=token
    )


def show(token: str) -> Response:
    """GET: the person's current choices; changes nothing."""
    try:
        project, user = _resolve(token)
    except NotFound:
        return _page(None, status=404)
    return _page(preferences.page_state(db.session, project=project, user=user, now=utcnow()))


def save(token: str) -> Response:
    """POST: store the submitted form, then show the page with a confirmation."""
    try:
        project, user = _resolve(token)
    except NotFound:
        return _page(None, status=404)
    form = request.form
    chosen_topics = set(form.getlist("topic"))
    chosen_channels = set(form.getlist("channel"))
    now = utcnow()
    preferences.save_preferences(
        db.session,
        project=project,
        user=user,
        marketing=not form.get("no_marketing"),
        channels={key: key in chosen_channels for key, _ in preferences.CHANNELS},
        topics={t["key"]: t["key"] in chosen_topics for t in preferences.project_topics(project)},
        now=now,
    )
    state = preferences.page_state(db.session, project=project, user=user, now=now)
    db.commit_request()
    return _page(state, saved=True)


# Registered on Flask's own add_url_rule: flask-smorest would put the page in the API document.
flask.Blueprint.add_url_rule(blp, "/p/<token>", "show", show, methods=["GET"])
flask.Blueprint.add_url_rule(blp, "/p/<token>", "save", save, methods=["POST"])
