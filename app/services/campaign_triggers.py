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
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from app.db import bulk_insert, insert_ignore
from app.models import Campaign, CampaignHoldout, Event, Project, User
from app.models.message import Send, SendSkip
from app.services.campaign_sends import campaign_send_values
from journeys.campaigns import in_holdout, in_window, target_tree
from workers.channels import CHANNELS


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


class SendBatch:
    """The one-user campaign sends of one transaction, written together by `flush`.

    The event processor plans every triggered campaign and `sendCampaign` of a group of events
    here and flushes once before its commit: the sends rows, the users' addresses per channel,
    the messages and the `no_address` skips are then a few statements for the whole group
    instead of several per event (each a round trip and an ORM flush: ~10 ms an event). Each
    `plan` returns its result entry at once; `flush` fills in its `messageIds` (and turns it
    into a `no_address` skip when no channel reached the user).
    """

    def __init__(self, session: Session, before_read: Callable[[], None] | None = None) -> None:
        self.session = session
        # Called before a target is evaluated (it reads memberships the caller may hold back).
        self.before_read = before_read
        self._planned: list[tuple[dict[str, Any], User, dict[str, Any]]] = []

    def plan(
        self,
        *,
        project: Project,
        campaign: Campaign,
        user: User,
        occurrence: str,
        params: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        """This campaign's messages to this user: checked now, written at `flush`."""
        if self.before_read is not None and target_tree(campaign.target) != {"all": []}:
            self.before_read()
        reason = skip_reason(self.session, campaign, user, now)
        if reason is not None:
            _skip(self.session, campaign, user, reason, now)
            return {
                "campaign": campaign.id,
                "result": "skipped",
                "reason": reason,
                "messageIds": [],
            }
        result: dict[str, Any] = {"campaign": campaign.id, "result": "queued", "messageIds": []}
        for values in campaign_send_values(
            project=project,
            campaign=campaign,
            occurrence=occurrence,
            now=now,
            fan_out=False,
            params=params,
        ):
            self._planned.append((values, user, result))
        return result

    def flush(self) -> None:
        """Write what was planned: sends, messages (their delivery deferred), skips."""
        from app.services.outbox import insert_messages, message_row

        planned, self._planned = self._planned, []
        if not planned:
            return
        session = self.session
        channels = sorted({c for values, _, _ in planned for c in values["channels"]})
        users = list({user.id: user for _, user, _ in planned}.values())
        addresses = {c: CHANNELS[c].addresses_of(session, users) for c in channels}
        # Each send's recipients are known before it is written (a row per address found):
        # only a send some of whose addresses were reached already needs an UPDATE after.
        for values, user, _ in planned:
            values["recipients"] = sum(
                len(addresses[c].get(user.id) or ()) for c in values["channels"]
            )
        # (dedup key, template) is one planned send: the occurrence names the event and the
        # rule or trigger, and a campaign's sends differ by template.
        made = bulk_insert(
            session,
            Send,
            [values for values, _, _ in planned],
            returning=("id", "dedup_key", "template_id"),
        )
        by_key = {(key, template): i for i, key, template in made}
        now = planned[0][0]["created_at"]
        rows: list[dict[str, Any]] = []
        skips: list[dict[str, Any]] = []
        sends: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        for values, user, result in planned:
            send_id = by_key[(values["dedup_key"], values["template_id"])]
            send = Send(**values, id=send_id)  # transient: message_row reads its columns
            sends[send_id] = (values, result)
            for channel in values["channels"]:
                found = addresses[channel].get(user.id)
                if not found:
                    skips.append(_skip_row(values, user, "no_address", channel, send_id))
                    continue
                rows += [
                    message_row(send, channel=channel, address=a, user_id=user.id, now=now)
                    for a in found
                ]
        reached: dict[int, int] = dict.fromkeys(sends, 0)
        for message_id, send_id in insert_messages(session, rows, with_send=True):
            reached[send_id] += 1
            sends[send_id][1]["messageIds"].append(message_id)
        bulk_insert(session, SendSkip, skips)
        counts = [
            {"b_id": send_id, "recipients": n, "deduplicated": sends[send_id][0]["recipients"] - n}
            for send_id, n in reached.items()
            if n != sends[send_id][0]["recipients"]
        ]
        if counts:
            table: Table = Send.__table__  # type: ignore[assignment]
            session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(recipients=bindparam("recipients"), deduplicated=bindparam("deduplicated")),
                counts,
            )
        for _, result in sends.values():
            if not result["messageIds"] and result["result"] == "queued":
                result.update(result="skipped", reason="no_address")


def _skip_row(
    send: dict[str, Any], user: User, reason: str, channel: str, send_id: int
) -> dict[str, Any]:
    return {
        "project_id": send["project_id"],
        "user_id": user.id,
        "campaign_id": send["campaign_id"],
        "send_id": send_id,
        "channel": channel,
        "reason": reason,
        "detail": None,
        "at": send["created_at"],
    }


def triggered_by(session: Session, project_id: int, event_name: str) -> list[Campaign]:
    """The project's active triggered campaigns listening for this event name."""
    return list(
        session.scalars(
            select(Campaign)
            .where(
                Campaign.project_id == project_id,
                Campaign.status == "active",
                Campaign.trigger_event == event_name,
                Campaign.kind == "triggered",
            )
            .order_by(Campaign.id)
        )
    )


def on_event(
    session: Session,
    *,
    project: Project,
    user: User | None,
    event: Event,
    now: datetime,
    batch: SendBatch | None = None,
    campaigns: list[Campaign] | None = None,
) -> list[dict[str, Any]]:
    """Start every active triggered campaign whose trigger matches this event, for its user.

    Returns one entry per campaign listening for the event: {"campaign": id, "result":
    "queued" | "skipped", "reason"?: ..., "messageIds": [...], "sendIds"?: [...]}. With a
    `batch`, the user's sends are written (and `messageIds` filled in) when it is flushed;
    `campaigns` is `triggered_by` for the event when the caller loaded it already.
    """
    from app.services.campaign_sends import create_campaign_sends
    from app.services.campaigns import where_matches

    own = batch is None
    batch = batch or SendBatch(session)
    if campaigns is None:
        campaigns = triggered_by(session, project.id, event.name)
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
            batch.plan(
                project=project,
                campaign=campaign,
                user=user,
                occurrence=occurrence,
                params=properties,
                now=now,
            )
        )
    if own:
        batch.flush()
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
    batch: SendBatch | None = None,
) -> dict[str, Any]:
    """The rule action `sendCampaign`: this campaign's messages to this user, now.

    Any active campaign of the project, with the same checks as a trigger (window, target,
    holdout). Returns {"result": "queued" | "skipped", "reason"?: ..., "messageIds": [...]}
    (filled in when the `batch` is flushed, if one is given).
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
    own = batch is None
    batch = batch or SendBatch(session)
    result = batch.plan(
        project=project,
        campaign=campaign,
        user=user,
        occurrence=_occurrence(cause),
        params=params,
        now=now,
    )
    if own:
        batch.flush()
    return result
