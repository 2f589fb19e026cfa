"""Triggered campaigns and the rule action `sendCampaign`, for one user (or a global event).

Called by the event processor (workers.events) after the rules of an event have run, so the
target sees the audiences those rules just changed. Nothing is cached between calls: the
campaigns are read through `ix_campaigns_trigger` each time, so an activation, a pause or an
edit counts from the next event on.

For one user, a campaign goes through these checks in order: the trigger's `where` on the
event's properties (an event it does not match did not trigger the campaign: nothing is
recorded, or every non-matching event would cost a row), then the first failing check of
these is one `SendSkip` row (user, campaign, reason): the window (`outside_window`), the
target (`not_in_target`; anonymous profiles are in no target, as in segments), the holdout
(`holdout`, also a `CampaignHoldout` row for lift). Then one message per reachable channel; a
channel without an address is a `no_address` skip. A global event (no user) sends to the
campaign's whole target instead: its sends fan out (holdout and rate are the fan-out's).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.models import Campaign, CampaignHoldout, Event, Project, User
from app.models.message import SendSkip
from journeys.campaigns import in_holdout, in_window, target_tree


def _skip(
    session: Session,
    campaign: Campaign,
    user: User | None,
    reason: str,
    now: datetime,
    *,
    channel: str | None = None,
    send_id: int | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        SendSkip(
            project_id=campaign.project_id,
            user_id=user.id if user is not None else None,
            campaign_id=campaign.id,
            send_id=send_id,
            channel=channel,
            reason=reason,
            detail=detail,
            at=now,
        )
    )


def skip_reason(
    session: Session, campaign: Campaign, user: User, now: datetime, *, check_window: bool = True
) -> str | None:
    """Why this user gets nothing from the campaign now (None: send), holdout recorded.

    Checks the window, the target and the holdout slice, in that order.
    """
    from app.services.user_facts import user_matches

    if check_window and not in_window(campaign.starts_at, campaign.ends_at, now):
        return "outside_window"
    tree = target_tree(campaign.target)
    if tree != {"all": []} and (
        user.external_id is None or not user_matches(session, user, tree, now)
    ):
        return "not_in_target"
    if in_holdout(campaign.id, user.id, campaign.holdout_percent or 0):
        session.execute(
            insert_ignore(session, CampaignHoldout, ["campaign_id", "user_id"]).values(
                project_id=campaign.project_id, campaign_id=campaign.id, user_id=user.id, at=now
            )
        )
        return "holdout"
    return None


def _send_to_user(
    session: Session,
    *,
    project: Project,
    campaign: Campaign,
    user: User,
    occurrence: str,
    params: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    from app.services.campaign_sends import create_campaign_sends
    from app.services.messages import send_to_users

    reason = skip_reason(session, campaign, user, now)
    if reason is not None:
        _skip(session, campaign, user, reason, now)
        return {"campaign": campaign.id, "result": "skipped", "reason": reason, "messageIds": []}
    sends = create_campaign_sends(
        session,
        project=project,
        campaign=campaign,
        occurrence=occurrence,
        now=now,
        fan_out=False,
        params=params,
    )
    ids: list[int] = []
    for send in sends:
        summary = send_to_users(session, send=send, users=[user])
        ids += summary.message_ids
        for channel in summary.unreachable:
            _skip(session, campaign, user, "no_address", now, channel=channel, send_id=send.id)
    session.flush()
    result: dict[str, Any] = {"campaign": campaign.id, "result": "queued", "messageIds": ids}
    if not ids:
        result.update(result="skipped", reason="no_address")
    return result


def on_event(
    session: Session, *, project: Project, user: User | None, event: Event, now: datetime
) -> list[dict[str, Any]]:
    """Start every active triggered campaign whose trigger matches this event, for its user.

    Returns one entry per campaign listening for the event: {"campaign": id, "result":
    "queued" | "skipped", "reason"?: ..., "messageIds": [...], "sendIds"?: [...]}.
    """
    from app.services.campaign_sends import create_campaign_sends
    from app.services.campaigns import where_matches

    campaigns = session.scalars(
        select(Campaign)
        .where(
            Campaign.project_id == project.id,
            Campaign.status == "active",
            Campaign.trigger_event == event.name,
            Campaign.kind == "triggered",
        )
        .order_by(Campaign.id)
    ).all()
    properties = dict(event.properties or {})
    occurrence = f"event:{event.id}"
    results: list[dict[str, Any]] = []
    for campaign in campaigns:
        where = (campaign.trigger or {}).get("where")
        if not where_matches(where, properties):
            results.append(
                {"campaign": campaign.id, "result": "skipped", "reason": "where_not_matched"}
            )
            continue
        if user is None:
            if not in_window(campaign.starts_at, campaign.ends_at, now):
                _skip(session, campaign, None, "outside_window", now)
                results.append(
                    {"campaign": campaign.id, "result": "skipped", "reason": "outside_window"}
                )
                continue
            sends = create_campaign_sends(
                session,
                project=project,
                campaign=campaign,
                occurrence=occurrence,
                now=now,
                fan_out=True,
                params=properties,
            )
            results.append(
                {
                    "campaign": campaign.id,
                    "result": "queued",
                    "messageIds": [],
                    "sendIds": [s.id for s in sends],
                }
            )
            continue
        results.append(
            _send_to_user(
                session,
                project=project,
                campaign=campaign,
                user=user,
                occurrence=occurrence,
                params=properties,
                now=now,
            )
        )
    session.flush()
    return results


def _occurrence(cause: dict[str, Any]) -> str:
    """One occurrence per rule firing: a reprocessed event reaches no address twice."""
    rule = cause.get("rule", cause.get("ruleId"))
    event = cause.get("event", cause.get("eventId"))
    if rule is not None and event is not None:
        return f"rule:{rule}:event:{event}"
    return f"rule:{uuid.uuid4().hex}"


def send_campaign_to_user(
    session: Session,
    *,
    project: Project,
    campaign_id: int,
    user: User,
    params: dict[str, Any],
    cause: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The rule action `sendCampaign`: this campaign's messages to this user, now.

    Any active campaign of the project, with the same checks as a trigger (window, target,
    holdout). Returns {"result": "queued" | "skipped", "reason"?: ..., "messageIds": [...]}.
    """
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.project_id != project.id:
        return {"result": "skipped", "reason": "campaign_not_found", "messageIds": []}
    if campaign.status != "active":
        return {
            "campaign": campaign.id,
            "result": "skipped",
            "reason": f"campaign_{campaign.status}",
            "messageIds": [],
        }
    return _send_to_user(
        session,
        project=project,
        campaign=campaign,
        user=user,
        occurrence=_occurrence(cause),
        params=params,
        now=now,
    )
