"""Audiences: members, adding and removing them (one by one, pasted, or a CSV upload sent in
chunks with a progress bar), membership TTLs, and the rules that feed each audience."""

from __future__ import annotations

import re
from typing import Any

from flask import redirect, render_template, request, url_for
from sqlalchemy import select

from app.db import db
from app.errors import DomainError, InvalidInput
from app.models import Audience, Rule
from app.models.base import utcnow
from app.services import audiences as service
from app.ui.access import audit, project_page, require
from app.ui.blueprint import bp
from app.ui.fields import read_seconds

PAGE = 100
# The most userIds one request adds or removes (as the API's members endpoints).
CHUNK = 1000


def _ttl(raw: Any) -> int | None:
    errors: dict[str, list[str]] = {}
    seconds = read_seconds(str(raw or ""), "ttlSeconds", errors)
    if errors:
        raise InvalidInput("Not a duration", errors)
    return seconds


def _ids(raw: Any) -> list[str]:
    """userIds from pasted text: one per line, or separated by commas or spaces."""
    if isinstance(raw, list):
        return [str(i).strip() for i in raw if str(i).strip()]
    return [part for part in re.split(r"[\s,;]+", str(raw or "")) if part]


def _feeding_rules(pid: int, audience: Audience) -> list[Rule]:
    refs = {str(audience.id), audience.name}
    rules = db.session.scalars(select(Rule).where(Rule.project_id == pid).order_by(Rule.name))
    return [
        r
        for r in rules
        if any(
            isinstance(a, dict)
            and str(a.get("addToAudience", a.get("removeFromAudience", ""))) in refs
            for a in r.actions or ()
        )
    ]


@bp.route("/projects/<int:pid>/audiences", methods=["GET", "POST"])
@project_page("viewer")
def audiences(pid: int) -> Any:
    """The project's audiences with their current member counts; a marketer creates one."""
    errors: dict[str, list[str]] = {}
    message = None
    code = 200
    if request.method == "POST":
        require("marketer", "Viewers cannot create audiences")
        try:
            made = service.create_audience(
                db.session,
                project_id=pid,
                name=request.form.get("name"),
                description=request.form.get("description") or None,
            )
        except DomainError as err:
            db.session.rollback()
            errors, message, code = err.errors or {}, err.message, err.code
        else:
            audit(
                "audience.created",
                "audience",
                made.id,
                summary=f"created audience {made.name}",
                after={"name": made.name},
            )
            return redirect(url_for("ui.audience", pid=pid, aid=made.id))
    rows = db.session.scalars(
        select(Audience).where(Audience.project_id == pid).order_by(Audience.name)
    ).all()
    counts = service.member_counts(db.session, [a.id for a in rows], utcnow())
    return render_template(
        "ui/audiences.html", rows=rows, counts=counts, errors=errors, message=message
    ), code


@bp.get("/projects/<int:pid>/audiences/<int:aid>")
@project_page("viewer")
def audience(pid: int, aid: int) -> Any:
    """Members (paged by user row), the add / remove / upload forms, feeding rules."""
    row = service.get_audience(db.session, project_id=pid, ref=str(aid))
    after = request.args.get("after", type=int)
    members = db.session.execute(
        service.members_query(audience_id=row.id, now=utcnow(), after_user_pk=after).limit(PAGE)
    ).all()
    return render_template(
        "ui/audience.html",
        a=row,
        members=members,
        count=service.member_counts(db.session, [row.id], utcnow()).get(row.id, 0),
        rules=_feeding_rules(pid, row),
        next_after=members[-1].id if len(members) == PAGE else None,
        chunk=CHUNK,
    )


@bp.post("/projects/<int:pid>/audiences/<int:aid>/members")
@project_page("marketer")
def audience_members(pid: int, aid: int) -> Any:
    """Add (or, with `remove`, take out) up to 1000 userIds: from the pasted-ids form, or JSON
    `{userIds, ttlSeconds?, remove?}` from the CSV upload. Unknown userIds are created on
    first sight, as the API does."""
    row = service.get_audience(db.session, project_id=pid, ref=str(aid))
    body = request.get_json(silent=True) if request.is_json else None
    source = body if isinstance(body, dict) else request.form
    ids = _ids(source.get("userIds"))
    if not ids:
        raise InvalidInput("Give at least one userId", {"userIds": ["required"]})
    if len(ids) > CHUNK:
        raise InvalidInput(f"At most {CHUNK} userIds at once", {"userIds": [f"at most {CHUNK}"]})
    remove = bool(source.get("remove"))
    now = utcnow()
    if remove:
        results = service.remove_members_by_user_id(
            db.session, project_id=pid, audience=row, user_ids=ids, now=now
        )
        outcome = {"removed": sum(r.removed for r in results)}
    else:
        results = service.add_members_by_user_id(
            db.session,
            project_id=pid,
            audience=row,
            user_ids=ids,
            ttl_seconds=_ttl(source.get("ttlSeconds") or source.get("ttl")),
            now=now,
        )
        joined = sum(r.joined for r in results)
        outcome = {
            "joined": joined,
            "refreshed": len(results) - joined,
            "created": sum(r.created for r in results),
        }
    audit(
        "audience.members_removed" if remove else "audience.members_added",
        "audience",
        aid,
        summary=f"{'removed' if remove else 'added'} {len(ids)} userIds ({outcome}) in {row.name}",
    )
    if body is not None:
        return outcome
    counts: dict[str, Any] = {f"r_{k}": v for k, v in outcome.items()}
    return redirect(url_for("ui.audience", pid=pid, aid=aid, **counts))
