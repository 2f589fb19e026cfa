"""Campaigns: the list, a wizard that builds the API's campaign object from plain fields, the
dry run (simulate) before activating, activate / pause / archive, a running send's progress
and the results with a chart over time.

The wizard's body goes through the API's own `CampaignInputSchema` and `create_campaign`, so a
field the API refuses is refused here with the same message, shown next to that field.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import redirect, render_template, request, url_for
from marshmallow import ValidationError
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from app.db import db
from app.errors import DomainError, flatten_errors
from app.models import Audience, Campaign, Message, Segment, Send, Template
from app.models.base import utcnow
from app.models.campaign import CATEGORIES, KINDS
from app.models.message import FINAL, MessageStatusChange
from app.schemas.campaigns import CampaignInputSchema
from app.services import campaigns as service
from app.services.campaign_stats import campaign_stats
from app.services.simulate import simulate
from app.ui.access import audit, names_by_id, project_page
from app.ui.blueprint import bp
from app.ui.charts import line_chart
from app.ui.describe import describe_seconds
from app.ui.fields import read_int, read_seconds
from app.ui.segments import filter_from_text, filter_text
from journeys.filters import CHANNELS

# The series of the results chart, in funnel order.
SERIES = ("sent", "delivered", "opened", "clicked", "failed")
KIND_HELP = {
    "triggered": "sent when a user does an event",
    "api": "sent when your backend calls POST /v1/campaigns/{id}/send",
    "broadcast": "sent once to everyone targeted, now or at a time",
    "recurring": "sent on a schedule (cron)",
}


def _filter_lines(text: str, field: str, errors: dict[str, list[str]]) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(filter_from_text(line))
            except DomainError as err:
                errors.setdefault(field, []).append(err.message)
    return out


def body_from_form(form: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The campaign object (API field names) the wizard's plain fields describe, and the
    errors found reading them (a duration that is not one, a number that is not one)."""
    errors: dict[str, list[str]] = {}
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "kind": form.get("kind", ""),
        "category": form.get("category") or "marketing",
        "channels": {ch: form[f"template_{ch}"] for ch in CHANNELS if form.get(f"template_{ch}")},
    }
    include: list[Any] = list(form.getlist("include_segment"))
    include += [{"audience": a} for a in form.getlist("include_audience")]
    # One filter per line (string form or JSON of the object or tree form).
    include += _filter_lines(form.get("include_filter", ""), "target.include", errors)
    exclude: list[Any] = list(form.getlist("exclude_segment"))
    exclude += [{"audience": a} for a in form.getlist("exclude_audience")]
    exclude += _filter_lines(form.get("exclude_filter", ""), "target.exclude", errors)
    if include or exclude:
        body["target"] = {"include": include, "exclude": exclude}
    if body["kind"] == "triggered":
        trigger: dict[str, Any] = {"event": form.get("trigger_event", "").strip()}
        if form.get("trigger_where", "").strip():
            trigger["where"] = form["trigger_where"].strip()
        body["trigger"] = trigger
    schedule: dict[str, Any] = {}
    if body["kind"] == "broadcast" and form.get("send_at"):
        schedule["sendAt"] = form["send_at"]
    if body["kind"] == "recurring":
        schedule["cron"] = form.get("cron", "").strip()
    if body["kind"] in ("broadcast", "recurring"):
        if form.get("timezone", "").strip():
            schedule["timezone"] = form["timezone"].strip()
        if form.get("deliver_in") == "userTimezone":
            schedule["deliverIn"] = "userTimezone"
    if schedule:
        body["schedule"] = schedule
    window = {
        k: form[f] for k, f in (("startsAt", "starts_at"), ("endsAt", "ends_at")) if form.get(f)
    }
    if window:
        body["window"] = window
    ttl = read_seconds(form.get("ttl", ""), "ttlSeconds", errors)
    if ttl is not None:
        body["ttlSeconds"] = ttl
    rate = read_int(form.get("rate_per_minute", ""), "rateLimit.perMinute", errors)
    if rate is not None:
        body["rateLimit"] = {"perMinute": rate}
    holdout = read_int(form.get("holdout_percent", ""), "holdoutPercent", errors)
    if holdout is not None:
        body["holdoutPercent"] = holdout
    if form.get("goal_event", "").strip():
        body["goal"] = {
            "event": form["goal_event"].strip(),
            "within": form.get("goal_within", "").strip() or "7d",
        }
    return body, errors


def _choices(pid: int) -> dict[str, Any]:
    templates = db.session.execute(
        select(Template.name, Template.channels)
        .where(Template.project_id == pid)
        .order_by(Template.name)
    ).all()
    by_channel = {ch: [name for name, chans in templates if ch in (chans or {})] for ch in CHANNELS}
    return {
        "templates": by_channel,
        "segments": db.session.scalars(
            select(Segment.name).where(Segment.project_id == pid).order_by(Segment.name)
        ).all(),
        "audiences": db.session.scalars(
            select(Audience.name).where(Audience.project_id == pid).order_by(Audience.name)
        ).all(),
        "kinds": KINDS,
        "kind_help": KIND_HELP,
        "categories": CATEGORIES,
        "channels": CHANNELS,
    }


@bp.get("/projects/<int:pid>/campaigns")
@project_page("viewer")
def campaigns(pid: int) -> Any:
    """The project's campaigns, newest first, optionally by state."""
    status = request.args.get("status") or None
    stmt = select(Campaign).where(Campaign.project_id == pid)
    if status:
        stmt = stmt.where(Campaign.status == status)
    rows = db.session.scalars(stmt.order_by(Campaign.id.desc()).limit(200)).all()
    return render_template("ui/campaigns.html", rows=rows, status=status)


@bp.route("/projects/<int:pid>/campaigns/new", methods=["GET", "POST"])
@project_page("marketer")
def campaign_new(pid: int) -> Any:
    """The wizard: kind, target, channels and templates, schedule, window, TTL, rate, goal."""
    from flask import g

    errors: dict[str, list[str]] = {}
    message = None
    if request.method == "POST":
        body, errors = body_from_form(request.form)
        if not errors:
            try:
                loaded = CampaignInputSchema().load(body)
                campaign = service.create_campaign(db.session, project=g.project, body=loaded)
            except ValidationError as err:
                errors = flatten_errors(err.messages)
            except DomainError as err:
                db.session.rollback()
                errors, message = err.errors or {}, err.message
            else:
                audit(
                    "campaign.created",
                    "campaign",
                    campaign.id,
                    summary=f"created campaign {campaign.name}",
                    after=service.campaign_fields(campaign),
                )
                return redirect(url_for("ui.campaign", pid=pid, cid=campaign.id))
        message = message or "Some fields need a change: see below"
    return render_template(
        "ui/campaign_new.html", form=request.form, errors=errors, message=message, **_choices(pid)
    ), (422 if errors else 200)


def _audience_names(pid: int) -> dict[str, str]:
    """Audience names by id as filter trees hold it (a string)."""
    return {str(aid): name for aid, name in names_by_id(Audience, pid).items()}


def named(tree: Any, audiences: dict[str, str]) -> Any:
    """A stored filter tree with audience ids shown by name (for reading, not for storing)."""
    if isinstance(tree, list):
        return [named(t, audiences) for t in tree]
    if not isinstance(tree, dict):
        return tree
    out = {k: named(v, audiences) for k, v in tree.items()}
    if "audience" in tree and not isinstance(tree["audience"], dict):
        out["audience"] = audiences.get(str(tree["audience"]), tree["audience"])
    return out


def form_of(campaign: Campaign, pid: int) -> MultiDict[str, Any]:
    """The wizard's fields holding a stored campaign (to edit it)."""
    templates = names_by_id(Template, pid)
    audiences = _audience_names(pid)
    form: MultiDict[str, Any] = MultiDict()
    form["name"] = campaign.name
    form["kind"] = campaign.kind
    form["category"] = campaign.category
    for channel, template_id in (campaign.channels or {}).items():
        form[f"template_{channel}"] = templates.get(template_id, str(template_id))
    filters: dict[str, list[str]] = {}
    for side in ("include", "exclude"):
        for item in (campaign.target or {}).get(side) or ():
            if isinstance(item, dict) and "audience" in item and set(item) <= {"audience", "op"}:
                name = audiences.get(str(item["audience"]), str(item["audience"]))
                form.add(f"{side}_audience", name)
            else:
                filters.setdefault(side, []).append(filter_text(named(item, audiences)))
    for side, lines in filters.items():
        form[f"{side}_filter"] = "\n".join(lines)
    trigger = campaign.trigger or {}
    form["trigger_event"] = trigger.get("event", "")
    if trigger.get("where"):
        form["trigger_where"] = filter_text(trigger["where"])
    schedule = campaign.schedule or {}
    if schedule.get("sendAt"):
        form["send_at"] = str(schedule["sendAt"])[:16]
    form["cron"] = schedule.get("cron") or ""
    form["timezone"] = schedule.get("timezone") or ""
    if schedule.get("deliverIn") == "userTimezone":
        form["deliver_in"] = "userTimezone"
    if campaign.starts_at:
        form["starts_at"] = campaign.starts_at.strftime("%Y-%m-%dT%H:%M")
    if campaign.ends_at:
        form["ends_at"] = campaign.ends_at.strftime("%Y-%m-%dT%H:%M")
    form["ttl"] = describe_seconds(campaign.ttl_seconds) if campaign.ttl_seconds else ""
    form["rate_per_minute"] = str(campaign.rate_per_minute or "")
    form["holdout_percent"] = (
        str(campaign.holdout_percent or "") if campaign.holdout_percent else ""
    )
    goal = campaign.goal or {}
    form["goal_event"] = goal.get("event", "")
    form["goal_within"] = describe_seconds(goal.get("within")) if goal.get("within") else ""
    return form


# What an emptied section of the wizard means when editing: that setting removed.
CLEARED = (
    "target",
    "trigger",
    "schedule",
    "window",
    "ttlSeconds",
    "rateLimit",
    "goal",
    "holdoutPercent",
)


@bp.route("/projects/<int:pid>/campaigns/<int:cid>/edit", methods=["GET", "POST"])
@project_page("marketer")
def campaign_edit(pid: int, cid: int) -> Any:
    """The wizard on a stored campaign; the API's editing rules for its state apply (an active
    campaign refuses what can only change in draft or paused, naming the field)."""
    from flask import g

    row = service.get_campaign(db.session, project_id=pid, ref=cid)
    errors: dict[str, list[str]] = {}
    message = None
    form: Any = form_of(row, pid)
    code = 200
    if request.method == "POST":
        form = request.form
        body, errors = body_from_form(form)
        body.pop("kind", None)
        for key in CLEARED:
            body.setdefault(key, None)
        if not errors:
            before = service.campaign_fields(row)
            try:
                from app.schemas.campaigns import CampaignPatchSchema

                loaded = CampaignPatchSchema().load(body)
                service.update_campaign(db.session, project=g.project, ref=str(cid), changes=loaded)
            except ValidationError as err:
                errors = flatten_errors(err.messages)
            except DomainError as err:
                db.session.rollback()
                errors, message, code = err.errors or {}, err.message, err.code
            else:
                row = service.get_campaign(db.session, project_id=pid, ref=cid)
                audit(
                    "campaign.edited",
                    "campaign",
                    cid,
                    summary=f"edited campaign {row.name}",
                    before=before,
                    after=service.campaign_fields(row),
                )
                return redirect(url_for("ui.campaign", pid=pid, cid=cid, edited=1))
        message = message or "Some fields need a change: see below"
        code = code if code != 200 else 422
    return render_template(
        "ui/campaign_new.html",
        form=form,
        errors=errors,
        message=message,
        editing=row,
        **_choices(pid),
    ), code


def _view_fields(row: Campaign, pid: int) -> dict[str, Any]:
    fields = service.campaign_fields(row)
    fields["target"] = named(fields["target"], _audience_names(pid))
    return fields


def _progress(campaign: Campaign) -> dict[str, Any]:
    """How far its sends are: messages ended of messages created, and whether fan-out goes on."""
    sends = select(Send.id).where(Send.campaign_id == campaign.id).scalar_subquery()
    total, ended = db.session.execute(
        select(func.count(), func.count().filter(Message.status.in_(FINAL))).where(
            Message.send_id.in_(sends)
        )
    ).one()
    fanning = db.session.scalar(
        select(func.count()).where(
            Send.campaign_id == campaign.id, Send.status.not_in(("done", "cancelled"))
        )
    )
    done = not fanning and ended == total and (total > 0 or campaign.status == "completed")
    percent = 100.0 if done else (round(100 * ended / total, 1) if total else 0.0)
    if not done and percent == 100.0:
        percent = 99.9  # every message so far ended, but more are still being created
    return {"total": total, "ended": ended, "fanningOut": bool(fanning), "percent": percent}


def _chart(campaign: Campaign) -> str | None:
    """Sent, delivered, opened, clicked and failed per hour (per minute for a young send)."""
    sends = select(Send.id).where(Send.campaign_id == campaign.id).scalar_subquery()
    rows = db.session.execute(
        select(MessageStatusChange.status, MessageStatusChange.at)
        .join(Message, Message.id == MessageStatusChange.message_id)
        .where(Message.send_id.in_(sends), MessageStatusChange.status.in_(SERIES))
        .limit(200_000)
    ).all()
    if not rows:
        return None
    first = min(at for _, at in rows)
    last = max(at for _, at in rows)
    step = timedelta(minutes=1) if last - first <= timedelta(hours=2) else timedelta(hours=1)
    buckets = int((last - first) / step) + 1
    counts = {s: [0] * buckets for s in SERIES}
    for status, at in rows:
        counts[status][int((at - first) / step)] += 1
    fmt = "%H:%M" if step < timedelta(hours=1) else "%m-%d %H:00"
    return line_chart(
        f"Per {'minute' if step < timedelta(hours=1) else 'hour'} (UTC)",
        [(first + i * step).strftime(fmt) for i in range(buckets)],
        {status: counts[status] for status in SERIES},
    )


def _campaign_page(row: Campaign, pid: int, simulation: dict[str, Any] | None) -> Any:
    return render_template(
        "ui/campaign.html",
        c=row,
        fields=_view_fields(row, pid),
        stats=campaign_stats(db.session, row),
        progress=_progress(row),
        chart=_chart(row),
        simulation=simulation,
        template_names=names_by_id(Template, pid),
    )


@bp.get("/projects/<int:pid>/campaigns/<int:cid>")
@project_page("viewer")
def campaign(pid: int, cid: int) -> Any:
    """One campaign: what it is, its state and actions, progress and results."""
    row = service.get_campaign(db.session, project_id=pid, ref=cid)
    return _campaign_page(row, pid, None)


@bp.get("/projects/<int:pid>/campaigns/<int:cid>/progress")
@project_page("viewer")
def campaign_progress(pid: int, cid: int) -> Any:
    """The progress bar's figures, polled by the page while a send runs."""
    row = service.get_campaign(db.session, project_id=pid, ref=cid)
    return {"status": row.status, **_progress(row)}


@bp.post("/projects/<int:pid>/campaigns/<int:cid>/simulate")
@project_page("viewer")
def campaign_simulate(pid: int, cid: int) -> Any:
    """The dry run: who would get it now, on which channel, when, and who is skipped and why.
    Nothing is written or sent."""
    from flask import g

    row = service.get_campaign(db.session, project_id=pid, ref=cid)
    result = simulate(db.session, project=g.project, campaign=row, now=utcnow())
    db.session.rollback()
    return _campaign_page(row, pid, result)


ACTIONS: dict[str, Any] = {
    "activate": service.activate_campaign,
    "pause": service.pause_campaign,
    "archive": service.archive_campaign,
}
PAST = {"activate": "activated", "pause": "paused", "archive": "archived"}


@bp.post("/projects/<int:pid>/campaigns/<int:cid>/<any(activate, pause, archive):action>")
@project_page("marketer")
def campaign_action(pid: int, cid: int, action: str) -> Any:
    """Activate (or resume), pause or archive; the audit log keeps the state change."""
    row = service.get_campaign(db.session, project_id=pid, ref=cid)
    before = row.status
    result = ACTIONS[action](db.session, project_id=pid, ref=cid)
    warnings: list[str] = list(result[1]) if isinstance(result, tuple) else []
    audit(
        f"campaign.{PAST[action]}",
        "campaign",
        cid,
        summary=f"{action} campaign {row.name}: {before} → {row.status}",
        before={"status": before},
        after={"status": row.status},
    )
    return redirect(url_for("ui.campaign", pid=pid, cid=cid, warning=warnings or None))
