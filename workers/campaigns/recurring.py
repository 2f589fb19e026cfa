"""The `recurring` campaign kind: `schedule.cron` (5 fields) in `schedule.timezone` (UTC).

With `deliverIn: "userTimezone"` the cron is read as a wall-clock time applied in each user's
zone (like a local-time broadcast, once per tick). The scheduler's reconcile job keeps one
date job for the next tick (workers.campaign_schedule); the kind functions change rows only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.models import Campaign, CampaignRun
from workers import campaign_schedule as schedule

NAME = "recurring"


def check(fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """Kind-specific errors by field path (`schedule.cron`, `schedule.timezone`...)."""
    return schedule.schedule_problems(NAME, fields)


def activate(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Start it: the first tick after now; warnings."""
    if campaign.activated_at is None:
        campaign.activated_at = now
    warning = schedule.audience_warning(session, campaign, now)
    return [warning] if warning else []


def pause(session: Session, campaign: Campaign, now: datetime) -> None:
    """Stop sending: fan-outs stop, queued messages wait; ticks while paused are not sent."""
    schedule.hold(session, campaign, now)


def resume(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Continue: what waited goes (TTLs applied); the ticks missed while paused are skipped."""
    _record_missed_tick(session, campaign, now)
    schedule.release(session, campaign, now)
    return []


def edited(session: Session, campaign: Campaign, now: datetime) -> None:
    """After an edit (paused): runs the new schedule no longer has are cancelled."""
    schedule.unplan_moved(session, campaign, now)


def archive(session: Session, campaign: Campaign, now: datetime) -> None:
    """End for good: scheduled runs, fan-outs and queued messages are cancelled."""
    schedule.cancel_pending(session, campaign, now, "campaign archived")


def _record_missed_tick(session: Session, campaign: Campaign, now: datetime) -> None:
    """Record the latest tick that passed while paused as skipped: the next one is after it."""
    last = session.scalar(
        select(CampaignRun.occurrence)
        .where(CampaignRun.campaign_id == campaign.id)
        .order_by(CampaignRun.occurrence.desc())
        .limit(1)
    )
    anchor = campaign.activated_at or now
    if last is not None:
        planned = datetime.fromisoformat(last.split("|")[0])
        anchor = max(anchor, planned if planned.tzinfo else planned.replace(tzinfo=now.tzinfo))
    sched = campaign.schedule or {}
    local = sched.get("deliverIn") == "userTimezone"
    missed = None
    tick = schedule.cron_after(sched, anchor)
    for _ in range(10_000):
        at = tick.replace(tzinfo=now.tzinfo) - schedule.EARLIEST_OFFSET if local else tick
        if at > now:
            break
        missed, tick = tick, schedule.cron_after(sched, tick)
    if missed is None:
        return
    occurrence = schedule.fmt_wall(missed) if local else schedule.fmt_instant(missed)
    due = missed.replace(tzinfo=now.tzinfo) if local else missed
    session.execute(
        insert_ignore(session, CampaignRun, ["campaign_id", "occurrence"]),
        [
            {
                "project_id": campaign.project_id,
                "campaign_id": campaign.id,
                "occurrence": occurrence,
                "due_at": due,
                "status": "skipped",
                "reason": "the campaign was paused at that time",
                "campaign_version": campaign.version,
                "created_at": now,
                "finished_at": now,
            }
        ],
    )
