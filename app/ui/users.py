"""Users: search by userId, email, phone or attribute; a profile with its devices, audiences
and the timeline that answers "why did / didn't this user get that message"."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import g, render_template, request
from sqlalchemy import or_, select

from app.db import db
from app.errors import BadRequest, DomainError
from app.models import Campaign, User
from app.models.base import utcnow
from app.services import profiles, push_subscriptions, segments
from app.services.audiences import audiences_of
from app.services.timeline import KINDS, decode_cursor, user_timeline
from app.ui.access import names_by_id, project_page
from app.ui.blueprint import bp

PAGE = 50
# A search with one of these is a segment filter (`plan:pro`, `{"plan": "pro"}`).
FILTER_MARKS = (":", "{", "[")


def _search(pid: int, q: str) -> Any:
    stmt = select(User).where(User.project_id == pid, User.external_id.is_not(None))
    if not q:
        return stmt.order_by(User.id.desc())
    if q.startswith(FILTER_MARKS) or (":" in q and "@" not in q):
        return stmt.where(segments.segment_clause(db.session, pid, q)).order_by(User.id)
    matches = [User.external_id == q, User.external_id.startswith(q, autoescape=True)]
    if "@" in q:
        matches.append(User.email == q.strip().lower())
    digits = q.replace(" ", "").replace("-", "")
    if digits.lstrip("+").isdigit():
        with contextlib.suppress(ValueError):
            matches.append(User.phone == profiles.normalize_phone(digits, g.project.default_region))
    return stmt.where(or_(*matches)).order_by(User.id)


@bp.get("/projects/<int:pid>/users")
@project_page("viewer")
def users(pid: int) -> Any:
    """Find users."""
    q = (request.args.get("q") or "").strip()
    error = None
    rows: list[User] = []
    try:
        rows = list(db.session.scalars(_search(pid, q).limit(PAGE)))
    except DomainError as err:
        db.session.rollback()
        error = err.message + "".join(
            f" — {k}: {'; '.join(v)}" for k, v in (err.errors or {}).items()
        )
    return render_template("ui/users.html", q=q, rows=rows, error=error, page=PAGE)


@bp.get("/projects/<int:pid>/users/<path:user_id>")
@project_page("viewer")
def user(pid: int, user_id: str) -> Any:
    """One profile and its timeline, newest first (`?kinds=message,skip` to narrow it)."""
    row = profiles.get_user(db.session, project_id=pid, user_id=user_id)
    kinds = [k for k in request.args.getlist("kinds") if k in KINDS] or None
    raw_cursor = request.args.get("cursor")
    try:
        cursor = decode_cursor(raw_cursor) if raw_cursor else None
    except ValueError:
        raise BadRequest("This page link is broken", {"cursor": ["malformed"]}) from None
    page = user_timeline(db.session, user_pk=row.id, limit=50, cursor=cursor, kinds=kinds)
    campaign_ids = {i["campaignId"] for i in page.items if i.get("campaignId") is not None}
    campaigns = names_by_id(Campaign, pid, campaign_ids)
    return render_template(
        "ui/user.html",
        user=row,
        audiences=audiences_of(db.session, row.id, utcnow()),
        devices=push_subscriptions.user_subscriptions(db.session, user_pk=row.id),
        anonymous_ids=profiles.anonymous_ids_of(db.session, row.id),
        items=page.items,
        next_cursor=page.next_cursor,
        kinds=kinds or [],
        all_kinds=KINDS,
        campaigns=campaigns,
    )
