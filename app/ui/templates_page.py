"""Message templates: per channel and language, an editor with a live preview rendered for a
chosen user (the unsaved text, in the same sandbox as a real send), and a test send.

Saving goes through the API's `create_template` / `update_template`; the preview renders with
`app.rendering.render`, which every real send uses, so what the preview shows is what goes out.
"""

from __future__ import annotations

from typing import Any

from flask import g, redirect, render_template, request, url_for
from sqlalchemy import select

from app.api.project import DEFAULT_STACK_WINDOW
from app.db import db
from app.errors import DomainError, InvalidInput
from app.models import Template
from app.rendering import CHANNELS, RenderError, build_context, render
from app.services import templates as service
from app.services.profiles import get_user
from app.ui.access import audit, project_page, require
from app.ui.blueprint import bp


def _editable(channel: str) -> list[str]:
    """The text fields the editor shows for a channel (object fields such as push actions are
    kept as stored)."""
    spec = CHANNELS[channel]
    return [f for f in spec.fields if f not in spec.object_fields]


def _content_from_form(form: Any, stored: dict[str, Any], language: str) -> dict[str, Any]:
    """{channel: {language: fields}} for the channels the form uses, keeping the stored object
    fields and the other languages."""
    channels: dict[str, Any] = {ch: dict(langs) for ch, langs in (stored or {}).items()}
    for channel in CHANNELS:
        if not form.get(f"use_{channel}"):
            if channel in channels:
                channels[channel].pop(language, None)
                if not channels[channel]:
                    del channels[channel]
            continue
        previous = channels.get(channel, {}).get(language, {})
        fields = {k: v for k, v in previous.items() if k in CHANNELS[channel].object_fields}
        for name in _editable(channel):
            value = form.get(f"{channel}_{name}", "")
            if value.strip():
                fields[name] = value
        channels.setdefault(channel, {})[language] = fields
    return channels


def _editor(pid: int, template: Template | None, **extra: Any) -> Any:
    language = request.values.get("lang") or (template.default_language if template else "en")
    stored = template.channels if template else {}
    return render_template(
        "ui/template_edit.html",
        template=template,
        language=language,
        languages=sorted(
            {lang for langs in (stored or {}).values() for lang in langs} | {language}
        ),
        stored=stored or {},
        channels=CHANNELS,
        editable=_editable,
        form=request.form,
        errors=extra.pop("errors", {}),
        message=extra.pop("message", None),
        **extra,
    )


@bp.get("/projects/<int:pid>/templates")
@project_page("viewer")
def templates(pid: int) -> Any:
    """The project's templates."""
    rows = db.session.scalars(
        select(Template).where(Template.project_id == pid).order_by(Template.name)
    ).all()
    return render_template("ui/templates.html", rows=rows)


def _save(pid: int, template: Template | None) -> Any:
    language = (request.form.get("lang") or "en").strip()
    stored = template.channels if template else {}
    channels = _content_from_form(request.form, stored, language)
    default = request.form.get("default_language") or language
    try:
        if template is None:
            saved = service.create_template(
                db.session,
                project_id=pid,
                name=request.form.get("name"),
                description=request.form.get("description") or None,
                default_language=default,
                channels=channels,
            )
            before = None
        else:
            before = {"name": template.name, "channels": template.channels}
            saved = service.update_template(
                db.session,
                project_id=pid,
                ref=template.id,
                changes={
                    "name": request.form.get("name"),
                    "description": request.form.get("description") or None,
                    "default_language": default,
                    "channels": channels,
                },
                replace=True,
            )
    except DomainError as err:
        db.session.rollback()
        if template is not None:
            template = service.get_template(db.session, project_id=pid, ref=template.id)
        return _editor(pid, template, errors=err.errors or {}, message=err.message), err.code
    audit(
        "template.created" if before is None else "template.edited",
        "template",
        saved.id,
        summary=f"{'created' if before is None else 'edited'} template {saved.name}",
        before=before,
        after={"name": saved.name, "channels": saved.channels},
    )
    return redirect(url_for("ui.template_edit", pid=pid, tid=saved.id, lang=language, saved=1))


@bp.route("/projects/<int:pid>/templates/new", methods=["GET", "POST"])
@project_page("viewer")
def template_new(pid: int) -> Any:
    """A new template."""
    if request.method == "GET":
        return _editor(pid, None)
    require("marketer", "Viewers cannot change templates: this needs marketer or above")
    return _save(pid, None)


@bp.route("/projects/<int:pid>/templates/<int:tid>", methods=["GET", "POST"])
@project_page("viewer")
def template_edit(pid: int, tid: int) -> Any:
    """Edit one language of a template (a viewer sees it read-only)."""
    template = service.get_template(db.session, project_id=pid, ref=tid)
    if request.method == "GET":
        return _editor(pid, template, saved=bool(request.args.get("saved")))
    require("marketer", "Viewers cannot change templates: this needs marketer or above")
    return _save(pid, template)


@bp.post("/projects/<int:pid>/templates/preview")
@project_page("viewer")
def template_preview(pid: int) -> Any:
    """Render the editor's unsaved content for a user (or nobody): {channel: fields} and the
    errors per channel; an unknown user is a 404 naming `userId`."""
    body = request.get_json(silent=True) or {}
    language = str(body.get("language") or "en")
    channels = body.get("channels") or {}
    if not isinstance(channels, dict):
        raise InvalidInput("channels must be an object", {"channels": ["an object"]})
    user_id = (body.get("userId") or "").strip()
    user = get_user(db.session, project_id=pid, user_id=user_id) if user_id else None
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    context = build_context(
        user=service.user_context(user) if user else None, params=params, event=None
    )
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for channel, fields in channels.items():
        if channel not in CHANNELS or not isinstance(fields, dict):
            continue
        try:
            rendered = render({channel: {language: fields}}, channel, language, language, context)
        except RenderError as err:
            errors[channel] = str(err)
            continue
        data[channel] = rendered.fields
    return {"data": data, "errors": errors}


@bp.post("/projects/<int:pid>/templates/<int:tid>/test-send")
@project_page("marketer")
def template_test_send(pid: int, tid: int) -> Any:
    """Send the saved template to one user now (transactional: caps and quiet hours do not
    hold a test back)."""
    from app.services.messages import TemplateMessage, send_template_messages

    template = service.get_template(db.session, project_id=pid, ref=tid)
    user_id = (request.form.get("userId") or "").strip()
    if not user_id:
        raise InvalidInput("Choose the user to send the test to", {"userId": ["required"]})
    get_user(db.session, project_id=pid, user_id=user_id)
    window = (g.project.settings or {}).get("stackWindowSeconds", DEFAULT_STACK_WINDOW)
    [result] = send_template_messages(
        db.session,
        project=g.project,
        items=[TemplateMessage(template=template.id, user_id=user_id, transactional=True)],
        stack_window=int(window),
    )
    if not result.ok:
        raise InvalidInput(
            "The test could not be sent: " + (result.error or "invalid"), result.errors or {}
        )
    audit("template.test_sent", "template", tid, summary=f"test of {template.name} to {user_id}")
    sent = len(result.message_ids)
    return redirect(url_for("ui.template_edit", pid=pid, tid=tid, tested=user_id, messages=sent))
