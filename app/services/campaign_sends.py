"""The sends of one campaign occurrence: one `Send` per template the campaign's channels use.

Every kind ends here: a triggered or API campaign (then `send_to_users` on each send), a
broadcast or cron run (then the send fans out over `target`). All the sends of one occurrence
share one dedup key, so a resumed, re-fired or retried occurrence never reaches an address twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.db import defer
from app.models import Campaign, Project
from app.models.message import Send
from app.services.messages import send_values
from journeys.campaigns import target_tree


def dedup_key(campaign: Campaign, occurrence: str) -> str:
    """The messages' dedup key for one occurrence (`campaign:<id>:<occurrence>`)."""
    return f"campaign:{campaign.id}:{occurrence}"[:100]


def campaign_send_values(
    *,
    project: Project,
    campaign: Campaign,
    occurrence: str,
    now: datetime,
    fan_out: bool,
    params: Mapping[str, Any] | None = None,
    run_id: int | None = None,
    idempotency_key: str | None = None,
) -> list[dict[str, Any]]:
    """The sends rows of one occurrence: one per distinct template of `campaign.channels`."""
    by_template: dict[int, list[str]] = {}
    for channel, template_id in (campaign.channels or {}).items():
        by_template.setdefault(int(template_id), []).append(channel)
    target = {"segment": target_tree(campaign.target)} if fan_out else None
    return [
        {
            **send_values(
                project,
                kind="campaign",
                channels=channels,
                content=dict(params or {}),
                ttl_seconds=campaign.ttl_seconds,
                transactional=campaign.category == "transactional",
                target=target,
                template_id=template_id,
                topic=campaign.topic,
                urgency=campaign.urgency,
                now=now,
            ),
            "campaign_id": campaign.id,
            "run_id": run_id,
            "dedup_key": dedup_key(campaign, occurrence),
            "rate_per_minute": campaign.rate_per_minute,
            "idempotency_key": idempotency_key,
        }
        for template_id, channels in by_template.items()
    ]


def create_campaign_sends(
    session: Session,
    *,
    project: Project,
    campaign: Campaign,
    occurrence: str,
    now: datetime,
    fan_out: bool,
    params: Mapping[str, Any] | None = None,
    run_id: int | None = None,
    idempotency_key: str | None = None,
) -> list[Send]:
    """One send per distinct template of `campaign.channels`, flushed.

    `fan_out=True`: each send targets the campaign's target (include/exclude as one filter) and
    its fan-out job is deferred. Otherwise the caller adds the recipients (`send_to_users`).
    """
    sends = [
        Send(**values)
        for values in campaign_send_values(
            project=project,
            campaign=campaign,
            occurrence=occurrence,
            now=now,
            fan_out=fan_out,
            params=params,
            run_id=run_id,
            idempotency_key=idempotency_key,
        )
    ]
    session.add_all(sends)
    session.flush()
    if fan_out:
        for send in sends:
            defer(session, "fan_out_send", send.id)
    return sends
