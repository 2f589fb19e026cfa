"""Project settings: name and phone region, identity verification, quiet hours, frequency cap,
notification stacking, senders, providers, the VAPID key and subject; and the API keys.

The form is read into the API's PATCH body and validated by `ProjectPatchSchema`, then applied
by `update_project` (the API's own code); only an admin of the project may change anything.
"""

from __future__ import annotations

from typing import Any

from flask import g, redirect, render_template, request, url_for
from marshmallow import ValidationError
from sqlalchemy import select

from app.api.project import project_view
from app.db import db
from app.errors import DomainError, InvalidInput, NotFound, flatten_errors
from app.models import ApiKey
from app.schemas.project import ProjectPatchSchema, providers_by_channel
from app.services import projects as service
from app.services.vapid import current_key
from app.ui.access import audit, project_page
from app.ui.blueprint import bp
from app.ui.fields import read_int, read_seconds


def _section(existing: Any, form: Any, fields: dict[str, str]) -> dict[str, Any] | None:
    """A settings object from its form fields, keeping the keys the form does not show; None
    (the setting removed) when nothing is left."""
    out = dict(existing or {})
    for form_name, key in fields.items():
        value = form.get(form_name, "").strip()
        if value:
            out[key] = value
        else:
            out.pop(key, None)
    return out or None


def body_from_form(
    form: Any, current: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The PATCH /v1/project body the settings form describes (an emptied section is null:
    removed), and the errors reading its plain fields. `current` is the stored settings:
    keys the form does not show (an SMS help text) are kept."""
    current = current or {}
    errors: dict[str, list[str]] = {}
    settings: dict[str, Any] = {}
    if form.get("quiet_start") or form.get("quiet_end"):
        quiet: dict[str, Any] = {
            "start": form.get("quiet_start", ""),
            "end": form.get("quiet_end", ""),
            "mode": form.get("quiet_mode") or "defer",
        }
        if form.get("quiet_timezone", "").strip():
            quiet["timezone"] = form["quiet_timezone"].strip()
        settings["quietHours"] = quiet
    else:
        settings["quietHours"] = None
    count = read_int(form.get("cap_count", ""), "settings.frequencyCap.count", errors)
    window = read_seconds(form.get("cap_window", ""), "settings.frequencyCap.windowSeconds", errors)
    if count is not None or window is not None:
        settings["frequencyCap"] = {"count": count, "windowSeconds": window}
    else:
        settings["frequencyCap"] = None
    stack = read_seconds(form.get("stack_window", ""), "settings.stackWindowSeconds", errors)
    if stack is not None:
        settings["stackWindowSeconds"] = stack
    settings["identityVerification"] = form.get("identity") or "optional"
    settings["email"] = _section(
        current.get("email"),
        form,
        {
            "email_fromAddress": "from",
            "email_fromName": "fromName",
            "email_replyTo": "replyTo",
            "email_unsubscribeMailto": "unsubscribeMailto",
        },
    )
    settings["sms"] = _section(current.get("sms"), form, {"sms_fromNumber": "from"})
    settings["push"] = _section(current.get("push"), form, {"push_vapidSubject": "vapidSubject"})
    providers = {
        channel: form[f"provider_{channel}"]
        for channel in providers_by_channel()
        if form.get(f"provider_{channel}")
    }
    settings["providers"] = providers or None
    body: dict[str, Any] = {
        "name": form.get("name", ""),
        "defaultRegion": form.get("default_region", "").strip() or None,
        "settings": settings,
    }
    return body, errors


def _page(**extra: Any) -> Any:
    project = g.project
    keys = db.session.scalars(
        select(ApiKey).where(ApiKey.project_id == project.id).order_by(ApiKey.id)
    ).all()
    vapid = current_key(db.session, project_id=project.id)
    return render_template(
        "ui/settings.html",
        view=project_view(project),
        keys=keys,
        vapid_public=vapid.public_key,
        providers=providers_by_channel(),
        form=request.form,
        errors=extra.pop("errors", {}),
        message=extra.pop("message", None),
        **extra,
    )


@bp.route("/projects/<int:pid>/settings", methods=["GET", "POST"])
@project_page("viewer")
def settings(pid: int) -> Any:
    """The settings form (read-only below admin)."""
    if request.method == "GET":
        return _page(saved=bool(request.args.get("saved")))
    if g.role != "admin":
        from app.errors import Forbidden

        raise Forbidden("Only an admin of this project can change its settings")
    body, errors = body_from_form(request.form, g.project.settings)
    if errors:
        return _page(errors=errors, message="Some fields need a change"), 422
    try:
        loaded = ProjectPatchSchema().load(body)
    except ValidationError as err:
        return _page(errors=flatten_errors(err.messages), message="Some fields need a change"), 422
    before = project_view(g.project)
    service.update_project(g.project, loaded)
    audit(
        "project.settings_changed",
        "project",
        pid,
        summary="changed the project's settings",
        before=before,
        after=project_view(g.project),
    )
    return redirect(url_for("ui.settings", pid=pid, saved=1))


@bp.post("/projects/<int:pid>/keys")
@project_page("admin")
def key_create(pid: int) -> Any:
    """A new secret or publishable key, shown once."""
    kind = request.form.get("kind", "")
    try:
        made = service.create_key(db.session, project_id=pid, kind=kind)
    except DomainError as err:
        db.session.rollback()
        return _page(errors=err.errors or {}, message=err.message), err.code
    audit("key.created", "key", made.key_id, summary=f"created a {kind} key {made.key[:15]}…")
    return _page(new_key=made.key, new_access_key=getattr(made, "access_key", None))


@bp.post("/projects/<int:pid>/keys/<int:kid>/revoke")
@project_page("admin")
def key_revoke(pid: int, kid: int) -> Any:
    """Revoke one of this project's keys: requests with it fail from now on."""
    row = db.session.get(ApiKey, kid)
    if row is None or row.project_id != pid:
        raise NotFound("No such key in this project")
    if row.revoked_at is not None:
        raise InvalidInput("This key is already revoked", {"key": ["revoked"]})
    service.revoke_key(db.session, prefix=row.prefix)
    audit(
        "key.revoked",
        "key",
        row.key_id,
        summary=f"revoked key {row.prefix}",
        before={"revokedAt": None},
        after={"revokedAt": row.revoked_at},
    )
    return redirect(url_for("ui.settings", pid=pid, revoked=row.prefix))
