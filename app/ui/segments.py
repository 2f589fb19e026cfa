"""Segments: a builder for the condition tree with the live count and a sample, the string form
accepted and shown; saved through the same service as /v1/segments."""

from __future__ import annotations

import json
from typing import Any

from flask import redirect, render_template, request, url_for
from sqlalchemy import select

from app.db import db
from app.errors import DomainError, InvalidInput
from app.models import Audience, Segment
from app.services import segments as service
from app.ui.access import audit, project_page, require
from app.ui.blueprint import bp
from journeys.filters import CHANNELS, parse_filter, to_string_form


def filter_from_text(text: str) -> Any:
    """What a typed filter means: JSON text of the object or tree form, else the string form."""
    text = text.strip()
    if text.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as err:
            raise InvalidInput("The filter is not valid JSON", {"filter": [str(err)]}) from None
    return text


def _submitted_filter() -> Any:
    if request.form.get("mode") == "text":
        return filter_from_text(request.form.get("filter_text", ""))
    try:
        return json.loads(request.form.get("filter_json") or "{}")
    except ValueError:
        raise InvalidInput("The builder sent no filter", {"filter": ["not JSON"]}) from None


def string_form(raw: Any) -> str | None:
    """A filter's string form (`plan:pro,role:admin`) when it has one (any input form)."""
    try:
        return to_string_form(parse_filter(raw))
    except ValueError:
        return None


def filter_text(tree: Any) -> str:
    """A stored filter as a marketer types it: the string form, else JSON ("" for none)."""
    if tree is None:
        return ""
    if not isinstance(tree, dict):
        return str(tree)
    return string_form(tree) or json.dumps(tree)


def _audience_names(pid: int) -> list[str]:
    return list(
        db.session.scalars(
            select(Audience.name).where(Audience.project_id == pid).order_by(Audience.name)
        )
    )


@bp.get("/projects/<int:pid>/segments")
@project_page("viewer")
def segments(pid: int) -> Any:
    """The project's segments."""
    rows = db.session.scalars(
        select(Segment).where(Segment.project_id == pid).order_by(Segment.name)
    ).all()
    return render_template("ui/segments.html", rows=rows, string_form=string_form)


def _editor(pid: int, segment: Segment | None, **extra: Any) -> Any:
    form = request.form
    tree = segment.filter if segment is not None else {"all": []}
    return render_template(
        "ui/segment_edit.html",
        segment=segment,
        name=form.get("name", segment.name if segment else ""),
        tree=tree,
        text=form.get("filter_text", string_form(tree) or json.dumps(tree)),
        mode=form.get("mode", "build"),
        audiences=_audience_names(pid),
        channels=CHANNELS,
        errors=extra.pop("errors", {}),
        message=extra.pop("message", None),
        **extra,
    )


@bp.route("/projects/<int:pid>/segments/new", methods=["GET", "POST"])
@project_page("viewer")
def segment_new(pid: int) -> Any:
    """Build a new segment."""
    if request.method == "GET":
        return _editor(pid, None)
    require("marketer", "Viewers cannot change segments")
    try:
        segment = service.create_segment(
            db.session, project_id=pid, name=request.form.get("name"), filter=_submitted_filter()
        )
    except DomainError as err:
        db.session.rollback()
        return _editor(pid, None, errors=err.errors or {}, message=err.message), err.code
    audit(
        "segment.created",
        "segment",
        segment.id,
        summary=f"created segment {segment.name}",
        after={"name": segment.name, "filter": segment.filter},
    )
    return redirect(url_for("ui.segment_edit", pid=pid, sid=segment.id, saved=1))


@bp.route("/projects/<int:pid>/segments/<int:sid>", methods=["GET", "POST"])
@project_page("viewer")
def segment_edit(pid: int, sid: int) -> Any:
    """Edit a segment (a viewer sees it read-only)."""
    segment = service.get_segment(db.session, project_id=pid, ref=str(sid))
    if request.method == "GET":
        return _editor(pid, segment, saved=bool(request.args.get("saved")))
    require("marketer", "Viewers cannot change segments")
    before = {"name": segment.name, "filter": segment.filter}
    try:
        service.update_segment(
            db.session,
            project_id=pid,
            ref=str(sid),
            changes={"name": request.form.get("name"), "filter": _submitted_filter()},
            replace=True,
        )
    except DomainError as err:
        db.session.rollback()
        segment = service.get_segment(db.session, project_id=pid, ref=str(sid))
        return _editor(pid, segment, errors=err.errors or {}, message=err.message), err.code
    audit(
        "segment.edited",
        "segment",
        segment.id,
        summary=f"edited segment {segment.name}",
        before=before,
        after={"name": segment.name, "filter": segment.filter},
    )
    return redirect(url_for("ui.segment_edit", pid=pid, sid=sid, saved=1))


@bp.post("/projects/<int:pid>/segments/<int:sid>/delete")
@project_page("marketer")
def segment_delete(pid: int, sid: int) -> Any:
    """Delete a segment."""
    segment = service.get_segment(db.session, project_id=pid, ref=str(sid))
    before = {"name": segment.name, "filter": segment.filter}
    service.delete_segment(db.session, project_id=pid, ref=str(sid))
    audit(
        "segment.deleted",
        "segment",
        sid,
        summary=f"deleted segment {before['name']}",
        before=before,
    )
    return redirect(url_for("ui.segments", pid=pid))


@bp.post("/projects/<int:pid>/segments/preview")
@project_page("viewer")
def segment_preview(pid: int) -> Any:
    """The live count: {count, sample, stringForm} for the builder's current filter, or the
    service's error naming the node (422)."""
    body = request.get_json(silent=True) or {}
    raw = body.get("filter")
    if body.get("mode") == "text":
        raw = filter_from_text(str(body.get("text", "")))
    try:
        result = service.preview_segment(db.session, project_id=pid, filter=raw)
    except DomainError as err:
        db.session.rollback()
        return {"message": err.message, "errors": err.errors or {}}, err.code
    result["stringForm"] = string_form(raw)
    return result
