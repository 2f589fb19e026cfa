"""A campaign's results: its messages by status and channel, conversions, holdout lift, skips.

A handful of aggregate queries (messages through `ix_sends_campaign` then `ix_messages_send`),
never a row per message. Message statuses are each message's current one; the funnel figures
count a message at every stage it passed (a clicked email was also sent, delivered, opened).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from app.models import Campaign
from app.models.campaign import CampaignConversion, CampaignHoldout
from app.models.message import REACHED, STATUSES, Message, Send, SendSkip

# Funnel stage -> the current statuses a message that passed it can have.
FUNNEL = {
    "sent": REACHED,
    "delivered": ("delivered", "opened", "clicked"),
    "opened": ("opened", "clicked"),
    "clicked": ("clicked",),
}


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def campaign_stats(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Counts by status (and per channel), funnel, conversions, revenue, holdout, skips."""
    from app.services.simulate import skip_reason

    sends = select(Send.id).where(Send.campaign_id == campaign.id).scalar_subquery()
    statuses: Counter[str] = Counter()
    by_channel: dict[str, Counter[str]] = {}
    for channel, status, n in session.execute(
        select(Message.channel, Message.status, func.count())
        .where(Message.send_id.in_(sends))
        .group_by(Message.channel, Message.status)
    ):
        statuses[status] += n
        by_channel.setdefault(channel, Counter())[status] += n
    skipped: Counter[str] = Counter()
    # Only these statuses: their reasons are a few fixed texts (a deferral's names its time).
    for status, reason, n in session.execute(
        select(Message.status, Message.reason, func.count())
        .where(Message.send_id.in_(sends), Message.status.in_(("suppressed", "expired")))
        .group_by(Message.status, Message.reason)
    ):
        skipped[skip_reason(status, reason)] += n
    for reason, n in session.execute(
        select(SendSkip.reason, func.count())
        .where(SendSkip.campaign_id == campaign.id)
        .group_by(SendSkip.reason)
    ):
        skipped[reason] += n
    # Fan-outs count their skips and the addresses already reached on the send itself.
    deduplicated = 0
    for counts, dups in session.execute(
        select(Send.skipped, Send.deduplicated).where(Send.campaign_id == campaign.id)
    ):
        deduplicated += dups or 0
        for reason, n in (counts or {}).items():
            if isinstance(n, int):
                skipped[reason] += n
    messaged = (
        session.scalar(
            select(func.count(distinct(Message.user_id))).where(
                Message.send_id.in_(sends), Message.status.in_(REACHED)
            )
        )
        or 0
    )
    conv = {
        holdout: (events, users, value)
        for holdout, events, users, value in session.execute(
            select(
                CampaignConversion.holdout,
                func.count(),
                func.count(distinct(CampaignConversion.user_id)),
                func.sum(CampaignConversion.value),
            )
            .where(CampaignConversion.campaign_id == campaign.id)
            .group_by(CampaignConversion.holdout)
        )
    }
    holdout_size = (
        session.scalar(select(func.count()).where(CampaignHoldout.campaign_id == campaign.id)) or 0
    )
    m_events, m_users, m_value = conv.get(False, (0, 0, None))
    h_events, h_users, h_value = conv.get(True, (0, 0, None))
    m_rate = _rate(m_users, messaged)
    h_rate = _rate(h_users, holdout_size)
    lift = (
        round((m_rate - h_rate) / h_rate, 6)
        if m_rate is not None and h_rate is not None and h_rate > 0
        else None
    )
    return {
        "campaignId": campaign.id,
        **{stage: sum(statuses[s] for s in covered) for stage, covered in FUNNEL.items()},
        **{s: statuses[s] for s in STATUSES if s not in FUNNEL},
        "deduplicated": statuses["deduplicated"] + deduplicated,
        "statuses": {s: statuses[s] for s in STATUSES if statuses[s]},
        "byChannel": {
            channel: {s: c[s] for s in STATUSES if c[s]}
            for channel, c in sorted(by_channel.items())
        },
        "messages": sum(statuses.values()),
        "messagedUsers": messaged,
        "converted": m_events,
        "convertedUsers": m_users,
        "revenue": float(m_value) if m_value is not None else 0.0,
        "conversionRate": m_rate,
        "holdout": {
            "size": holdout_size,
            "converted": h_events,
            "convertedUsers": h_users,
            "revenue": float(h_value) if h_value is not None else 0.0,
            "conversionRate": h_rate,
            "lift": lift,
        },
        "skipped": dict(skipped),
    }
