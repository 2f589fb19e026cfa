"""Renaming (and describing) and deleting an audience, through the same services as PATCH and
DELETE /v1/audiences/{id}; both kept in the audit log.

The forms are the partial `ui/audience_edit_forms.html` (it needs `a`, the Audience, and `ctx`),
included in the audience page; `GET .../edit` shows them alone, and a refused change comes back
there with the reason next to its field.

Rules, campaign targets and journeys store the audience's id, so a rename keeps them working; a
condition in a segment or a rule's `if` names the audience by its name (`{"audience": "vip"}`) and
stops matching: the redirect after a rename lists them (`stale`), which the partial shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import redirect, render_template, request, url_for
from sqlalchemy import select

from app.db import db
from app.errors import Conflict, DomainError
from app.models import Audience, Rule, Segment
from app.models.base import utcnow
from app.services import audiences as service
from app.ui.access import audit, project_page
from app.ui.blueprint import bp


def _fields(audience: Audience) -> dict[str, Any]:
    return {"name": audience.name, "description": audience.description}


def _audience_names(node: Any) -> Iterator[str]:
    """The audiences a filter tree names by name (string values of `audience` leaves)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("audience"), str):
                yield item["audience"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def naming(pid: int, name: str) -> list[str]:
    """What names the audience `name` by its name, not its id: `segment vips`, `rule cart`
    (a segment's filter, a rule's `if`)."""
    found = [
        f"segment {seg}"
        for seg, tree in db.session.execute(
            select(Segment.name, Segment.filter).where(Segment.project_id == pid)
        )
        if name in set(_audience_names(tree))
    ]
    found += [
        f"rule {rule}"
        for rule, tree in db.session.execute(
            select(Rule.name, Rule.condition).where(Rule.project_id == pid)
        )
        if name in set(_audience_names(tree))
    ]
    return sorted(found)


def _form_page(audience: Audience, errors: dict[str, Any], message: str | None) -> Any:
    return render_template(
        "ui/audience_edit.html",
        a=audience,
        edit_errors=errors,
        edit_values=request.form if request.method == "POST" else {},
        message=message,
    ), (422 if errors or message else 200)


@bp.route("/projects/<int:pid>/audiences/<int:aid>/edit", methods=["GET", "POST"])
@project_page("marketer")
def audience_edit(pid: int, aid: int) -> Any:
    """Change the name and description (members, and what refers to it by id, stay)."""
    row = service.get_audience(db.session, project_id=pid, ref=str(aid))
    if request.method == "GET":
        return _form_page(row, {}, None)
    before = _fields(row)
    changes = {
        "name": request.form.get("name", ""),
        "description": (request.form.get("description") or "").strip() or None,
    }
    try:
        service.update_audience(
            db.session, project_id=pid, ref=str(aid), changes=changes, replace=False
        )
    except DomainError as err:
        db.session.rollback()
        row = service.get_audience(db.session, project_id=pid, ref=str(aid))
        errors: dict[str, Any] = dict(err.errors or {})
        if isinstance(err, Conflict):
            errors = {"name": ["another audience already has this name"]}
        return _form_page(row, errors, "The audience was not changed: see below")
    after = _fields(row)
    renamed = after["name"] != before["name"]
    stale = naming(pid, before["name"]) if renamed else []
    summary = (
        f"renamed audience {before['name']} to {after['name']}"
        if renamed
        else f"edited audience {after['name']}"
    )
    if stale:
        summary += f" (still naming {before['name']}: {', '.join(stale)})"
    audit("audience.edited", "audience", aid, summary=summary, before=before, after=after)
    extra: dict[str, Any] = {"renamed_from": before["name"], "stale": stale} if renamed else {}
    return redirect(url_for("ui.audience", pid=pid, aid=aid, saved=1, **extra))


@bp.post("/projects/<int:pid>/audiences/<int:aid>/delete")
@project_page("marketer")
def audience_delete(pid: int, aid: int) -> Any:
    """Delete the audience with its memberships and their history."""
    row = service.get_audience(db.session, project_id=pid, ref=str(aid))
    before = _fields(row) | {
        "members": service.member_counts(db.session, [row.id], utcnow()).get(row.id, 0)
    }
    service.delete_audience(db.session, project_id=pid, ref=str(aid))
    audit(
        "audience.deleted",
        "audience",
        aid,
        summary=f"deleted audience {before['name']} ({before['members']} members)",
        before=before,
    )
    return redirect(url_for("ui.audiences", pid=pid))
