"""The message log (filters, each message's status history) and the sandbox outbox (what
email and SMS would have sent while no provider is configured)."""

from __future__ import annotations

from typing import Any

from flask import render_template, request
from sqlalchemy import select

from app.db import db
from app.models import Campaign, Message, Send, User
from app.models.message import STATUSES, MessageStatusChange, SandboxMessage
from app.services.messages import message_log_query
from app.ui.access import project_page
from app.ui.blueprint import bp
from journeys.filters import CHANNELS

PAGE = 100


@bp.get("/projects/<int:pid>/messages")
@project_page("viewer")
def messages(pid: int) -> Any:
    """Newest first, by channel, status, user and campaign; each with its history."""
    args = request.args
    filters: dict[str, Any] = {
        "channel": args.get("channel") or None,
        "status": args.get("status") or None,
    }
    user_id = (args.get("user") or "").strip()
    unknown_user = False
    if user_id:
        filters["user_pk"] = db.session.scalar(
            select(User.id).where(User.project_id == pid, User.external_id == user_id)
        )
        unknown_user = filters["user_pk"] is None
    stmt = message_log_query(pid, after_id=None, filters=filters).order_by(None)
    before = args.get("before", type=int)
    if before is not None:
        stmt = stmt.where(Message.id < before)
    rows = (
        []
        if unknown_user
        else list(db.session.scalars(stmt.order_by(Message.id.desc()).limit(PAGE)))
    )
    ids = [m.id for m in rows]
    history: dict[int, list[MessageStatusChange]] = {}
    if ids:
        for change in db.session.scalars(
            select(MessageStatusChange)
            .where(MessageStatusChange.message_id.in_(ids))
            .order_by(MessageStatusChange.at, MessageStatusChange.id)
        ):
            history.setdefault(change.message_id, []).append(change)
    user_ids = {m.user_id for m in rows if m.user_id is not None}
    names: dict[int, str | None] = {}
    if user_ids:
        found = db.session.execute(select(User.id, User.external_id).where(User.id.in_(user_ids)))
        names = {uid: ext for uid, ext in found}
    send_ids = {m.send_id for m in rows if m.send_id is not None}
    campaigns: dict[int, str] = {}  # send id -> campaign name
    if send_ids:
        for send_id, name in db.session.execute(
            select(Send.id, Campaign.name)
            .join(Campaign, Campaign.id == Send.campaign_id)
            .where(Send.id.in_(send_ids))
        ):
            campaigns[send_id] = name
    return render_template(
        "ui/messages.html",
        rows=rows,
        history=history,
        names=names,
        campaigns=campaigns,
        channels=CHANNELS,
        statuses=STATUSES,
        unknown_user=unknown_user,
        older=rows[-1].id if len(rows) == PAGE else None,
    )


@bp.get("/projects/<int:pid>/outbox")
@project_page("viewer")
def outbox(pid: int) -> Any:
    """The sandbox outbox, newest first."""
    channel = request.args.get("channel") or None
    stmt = select(SandboxMessage).where(SandboxMessage.project_id == pid)
    if channel:
        stmt = stmt.where(SandboxMessage.channel == channel)
    rows = db.session.scalars(stmt.order_by(SandboxMessage.id.desc()).limit(PAGE)).all()
    return render_template("ui/outbox.html", rows=rows, channel=channel)
