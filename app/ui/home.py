"""A project's home: traffic and delivery of the last hour and day, queue depth, the
scheduler, and the recent campaigns and journeys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import render_template
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from app.db import db
from app.models import Campaign, Event, Journey, Message
from app.models.base import utcnow
from app.ui.access import project_page
from app.ui.blueprint import bp

WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DELIVERED = ("sent", "delivered", "opened", "clicked")


def _events_since(pid: int, since: Any) -> int:
    # processed_at rides the (project_id, processed_at, id) index; every event gets one soon
    # after it arrives.
    return (
        db.session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.project_id == pid, Event.processed_at >= since)
        )
        or 0
    )


def _messages_since(pid: int, since: Any) -> dict[str, dict[str, int]]:
    rows = db.session.execute(
        select(Message.channel, Message.status, func.count())
        .where(Message.project_id == pid, Message.created_at >= since)
        .group_by(Message.channel, Message.status)
    )
    out: dict[str, dict[str, int]] = {}
    for channel, status, n in rows:
        out.setdefault(channel, {})[status] = n
    return out


def _rates(by_channel: dict[str, dict[str, int]]) -> dict[str, Any]:
    total = sum(sum(s.values()) for s in by_channel.values())
    delivered = sum(n for s in by_channel.values() for st, n in s.items() if st in DELIVERED)
    failed = sum(s.get("failed", 0) for s in by_channel.values())
    ended = delivered + failed
    return {
        "total": total,
        "delivered_pct": round(100 * delivered / ended, 1) if ended else None,
        "failed_pct": round(100 * failed / ended, 1) if ended else None,
    }


def _scheduler() -> dict[str, Any]:
    """The sweeper job's next run in the persistent job store: late means no active scheduler."""
    try:
        next_ts = db.session.scalar(
            text("SELECT next_run_time FROM apscheduler_jobs WHERE id = 'sweeper'")
        )
    except SQLAlchemyError:
        db.session.rollback()
        return {"state": "not started", "lag_s": None}
    if next_ts is None:
        return {"state": "not started", "lag_s": None}
    lag = utcnow().timestamp() - float(next_ts)
    return {"state": "running" if lag < 60 else "late", "lag_s": round(max(lag, 0), 1)}


@bp.get("/projects/<int:pid>/")
@project_page("viewer")
def home(pid: int) -> Any:
    """The project's dashboard."""
    now = utcnow()
    windows = {}
    for name, span in WINDOWS.items():
        by_channel = _messages_since(pid, now - span)
        minutes = span.total_seconds() / 60
        windows[name] = {
            "events_per_min": round(_events_since(pid, now - span) / minutes, 1),
            "messages_per_min": {
                ch: round(sum(s.values()) / minutes, 1) for ch, s in sorted(by_channel.items())
            },
            **_rates(by_channel),
        }
    queued = db.session.scalar(
        select(func.count())
        .select_from(Message)
        .where(Message.project_id == pid, Message.status.in_(("queued", "sending")))
    )
    campaigns = db.session.scalars(
        select(Campaign).where(Campaign.project_id == pid).order_by(Campaign.id.desc()).limit(8)
    ).all()
    journeys = db.session.scalars(
        select(Journey).where(Journey.project_id == pid).order_by(Journey.id.desc()).limit(8)
    ).all()
    return render_template(
        "ui/home.html",
        windows=windows,
        queued=queued,
        scheduler=_scheduler(),
        campaigns=campaigns,
        journeys=journeys,
    )
