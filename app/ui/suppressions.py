"""The suppression list: addresses nothing is sent to on a channel (bounces, complaints, STOP,
unsubscribes, and the ones added by hand), with add and remove through the API's service."""

from __future__ import annotations

from typing import Any

from flask import g, redirect, render_template, request, url_for
from marshmallow import ValidationError
from sqlalchemy import select

from app.db import db
from app.errors import DomainError, flatten_errors
from app.models.message import Suppression
from app.schemas.suppressions import SuppressionInputSchema, SuppressionRemoveSchema
from app.services import suppressions as service
from app.ui.access import audit, project_page
from app.ui.blueprint import bp
from journeys.filters import CHANNELS

PAGE = 100


def _page(pid: int, **extra: Any) -> Any:
    q = (request.args.get("q") or "").strip().lower()
    stmt = select(Suppression).where(Suppression.project_id == pid)
    if q:
        stmt = stmt.where(Suppression.address.contains(q, autoescape=True))
    rows = db.session.scalars(stmt.order_by(Suppression.id.desc()).limit(PAGE)).all()
    return render_template(
        "ui/suppressions.html",
        rows=rows,
        q=q,
        channels=[c for c in CHANNELS if c != "inapp"],
        errors=extra.pop("errors", {}),
        message=extra.pop("message", None),
        **extra,
    )


@bp.get("/projects/<int:pid>/suppressions")
@project_page("viewer")
def suppressions(pid: int) -> Any:
    """Newest first; `?q=` finds an address."""
    return _page(pid)


@bp.post("/projects/<int:pid>/suppressions")
@project_page("marketer")
def suppression_change(pid: int) -> Any:
    """Add (`{channel, address, reason}`) or, with `remove`, take an address off the list."""
    remove = bool(request.form.get("remove"))
    raw = {k: request.form[k] for k in ("channel", "address", "reason") if request.form.get(k)}
    if remove:
        raw.pop("reason", None)
    schema = SuppressionRemoveSchema() if remove else SuppressionInputSchema()
    try:
        body = schema.load(raw)
        if remove:
            n = service.remove_suppression(db.session, project=g.project, **body)
        else:
            n = service.add_suppression(db.session, project=g.project, **body)
    except ValidationError as err:
        return _page(pid, errors=flatten_errors(err.messages), message="Check the fields"), 422
    except DomainError as err:
        db.session.rollback()
        return _page(pid, errors=err.errors or {}, message=err.message), err.code
    verb = "removed" if remove else "added"
    audit(
        f"suppression.{verb}",
        "suppression",
        f"{body['channel']}:{body['address']}",
        summary=f"{verb} {body['address']} on {body['channel']}" + ("" if n else " (no change)"),
    )
    outcome: dict[str, Any] = {verb: n}
    return redirect(url_for("ui.suppressions", pid=pid, **outcome))
