"""Campaign goals: attribute a conversion event to the campaign that preceded it.

Called by the event processor (workers.events) for every user event. A campaign's goal is
`{event, where?, valueField?, within}` (seconds). The event converts for the campaign when a
message of that campaign reached the user (sent, delivered, opened or clicked) at most `within`
before the event, attributed to the latest such message; or, for a member of the campaign's
holdout, at most `within` after they were held out (a holdout conversion, for lift). Windows
are measured from the event's own timestamp, so a late-processed event is attributed as it
happened. `(campaign, event)` is unique: a reprocessed event counts once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.models import Campaign, Event, Project, User
from app.models.campaign import CampaignConversion, CampaignHoldout
from app.models.message import REACHED, Message, Send
from journeys.filters import EventCondition, EventFact, UserFacts, evaluate, parse_filter

# A conversion's stored value: Numeric(18, 4).
MAX_VALUE = Decimal("99999999999999")


def _where_matches(where: Any, event: Event, now: datetime) -> bool:
    """The goal's `where` over this event's properties, evaluated as a segment's `where`."""
    if not where:
        return True
    fact = EventFact(name=event.name, timestamp=event.timestamp, properties=event.properties or {})
    probe = EventCondition(event.name, "performed", where=parse_filter(where))
    return evaluate(probe, UserFacts(now=now, events=(fact,)))


def _value(goal: dict[str, Any], event: Event) -> Decimal | None:
    """properties[valueField] when it is a number (or a numeric string); else None."""
    field = goal.get("valueField")
    if not field:
        return None
    raw = (event.properties or {}).get(field)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = Decimal(str(raw)).quantize(Decimal("0.0001"))
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or abs(value) > MAX_VALUE:
        return None
    return value


def _within(goal: dict[str, Any]) -> timedelta | None:
    within = goal.get("within")
    if isinstance(within, bool) or not isinstance(within, int | float) or within <= 0:
        return None
    return timedelta(seconds=within)


def on_event(session: Session, *, project: Project, user: User, event: Event, now: datetime) -> int:
    """Record the conversions this event is for campaigns with a matching goal; how many."""
    # One query on the project's campaigns (the (project_id, name) index), no per-event cache
    # to invalidate: most events find nothing here and cost only this.
    goals = session.execute(
        select(Campaign.id, Campaign.goal).where(
            Campaign.project_id == project.id,
            Campaign.status != "draft",
            Campaign.goal["event"].as_string() == event.name,
        )
    ).all()
    recorded = 0
    at = event.timestamp
    for campaign_id, goal in goals:
        goal = goal or {}
        within = _within(goal)
        if within is None or not _where_matches(goal.get("where"), event, now):
            continue
        message_id = session.scalar(
            select(Message.id)
            .join(Send, Send.id == Message.send_id)
            .where(
                Message.user_id == user.id,
                Send.campaign_id == campaign_id,
                Message.status.in_(REACHED),
                Message.sent_at <= at,
                Message.sent_at >= at - within,
            )
            .order_by(Message.sent_at.desc(), Message.id.desc())
            .limit(1)
        )
        holdout = False
        if message_id is None:
            held = session.scalar(
                select(CampaignHoldout.id).where(
                    CampaignHoldout.campaign_id == campaign_id,
                    CampaignHoldout.user_id == user.id,
                    CampaignHoldout.at <= at,
                    CampaignHoldout.at >= at - within,
                )
            )
            if held is None:
                continue
            holdout = True
        inserted = session.execute(
            insert_ignore(session, CampaignConversion, ["campaign_id", "event_id"])
            .values(
                project_id=project.id,
                campaign_id=campaign_id,
                user_id=user.id,
                event_id=event.id,
                message_id=message_id,
                holdout=holdout,
                value=_value(goal, event),
                at=at,
            )
            .returning(CampaignConversion.id)
        ).first()
        recorded += inserted is not None
    return recorded
