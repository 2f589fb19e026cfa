"""The `broadcast` campaign kind: once, now or at `schedule.sendAt`, in UTC or each user's zone.

The kind functions run in the API request: they change rows only. The active scheduler's
reconcile job (workers.scheduler) brings its APScheduler store in step with them within
seconds; nothing here talks to APScheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Campaign
from workers import campaign_schedule as schedule

NAME = "broadcast"


def check(fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """Kind-specific errors by field path (`schedule.sendAt`, `schedule.deliverIn`...)."""
    return schedule.schedule_problems(NAME, fields)


def activate(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Start it: no sendAt = plan the run now; else the scheduler fires at sendAt; warnings."""
    warnings = []
    sched = campaign.schedule or {}
    if campaign.activated_at is None:
        campaign.activated_at = now
    if sched.get("sendAt") is None:
        # "now": planned in this transaction (the run starts once it commits).
        schedule.plan(session, campaign.id, schedule.fmt_instant(now), {}, now=now, activating=True)
    elif sched.get("deliverIn") != "userTimezone":
        at = schedule.send_at(sched)
        if at < now:
            warnings.append(
                f"schedule.sendAt ({at.isoformat()}) has passed: it is sent now"
                + (" if within ttlSeconds" if campaign.ttl_seconds else "")
            )
    warning = schedule.audience_warning(session, campaign, now)
    if warning:
        warnings.append(warning)
    return warnings


def pause(session: Session, campaign: Campaign, now: datetime) -> None:
    """Stop sending: fan-outs stop, queued messages wait, due runs wait."""
    schedule.hold(session, campaign, now)


def resume(session: Session, campaign: Campaign, now: datetime) -> list[str]:
    """Continue: held messages go (their TTL applied), fan-outs go on, due runs start."""
    schedule.release(session, campaign, now)
    return []


def edited(session: Session, campaign: Campaign, now: datetime) -> None:
    """After an edit (paused): runs the new schedule no longer has are cancelled."""
    schedule.unplan_moved(session, campaign, now)


def archive(session: Session, campaign: Campaign, now: datetime) -> None:
    """End for good: scheduled runs, fan-outs and queued messages are cancelled."""
    schedule.cancel_pending(session, campaign, now, "campaign archived")
