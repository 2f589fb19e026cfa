"""When scheduled campaigns (broadcast, recurring) send: occurrences, runs, and their life.

Campaign rows are the truth. The active scheduler keeps one APScheduler *date* job per active
scheduled campaign (`campaign:<id>`, calling `fire` for its next occurrence; `desired_jobs`
says which, `workers.scheduler.reconcile` applies it). A fire only enqueues `plan_campaign`;
`plan` writes the occurrence's runs (one per user zone for local-time sends) under the unique
(campaign, occurrence), so a double fire or a restart creates nothing twice; the sweep
(`workers.sweeps.campaign_runs`) starts due runs, finishes them, completes campaigns and
auto-pauses failing ones.

Recurring campaigns also use date jobs, one occurrence at a time, computed with `cronsim`:
APScheduler 3.11's own CronTrigger fires a daily 02:30 twice on a fall-back day and stays
stuck on the repeated hour of an hourly cron (checked here; TRAPS.md #606/#1021), while
cronsim follows Debian cron (a time in the spring-forward gap runs at the first instant after
it, a fall-back repeat of a fixed time runs once, wildcard hours run for each real hour).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.db import defer, insert_ignore
from app.models import Campaign, CampaignRun, Project, User
from app.models.base import utcnow
from app.models.message import Message, MessageStatusChange, Send
from journeys.campaigns import in_window, target_tree

SCHEDULED_KINDS = ("broadcast", "recurring")
# The earliest any place on Earth reaches a wall-clock time (UTC+14, Line Islands): a local-time
# occurrence is planned this long before its wall time read as UTC, so no zone is missed.
EARLIEST_OFFSET = timedelta(hours=14)
# Queued messages of a paused campaign wait with this not_before (delivery claims only due
# rows; the TTL sweep still expires them); resume gives them a real time again.
HELD = datetime(9000, 1, 1, tzinfo=UTC)
HELD_REASON = "held: campaign paused"
# A fire is taken as planned for this long (the plan job is on its way): reconcile re-arms it
# only after, so a scheduler whose workers are down does not fire the same occurrence in a loop.
FIRE_GRACE_SECONDS = 60
# Started later than this after its due time = worth a reason on the run ("sent late").
LATE_SECONDS = 60
MOVED_REASON = "the schedule was edited: this occurrence is no longer in it"
FALLBACK_NOTE = "also covers users without a known time zone"
AUTO_PAUSE_DEFAULT = {"failureRate": 0.5, "minMessages": 20}
ATTEMPTED = ("sent", "delivered", "opened", "clicked", "failed")
PENDING = ("queued", "sending")


# --- occurrences ----------------------------------------------------------------------------


def fmt_instant(value: datetime) -> str:
    """An instant as an occurrence string (`2026-12-02T10:00:00Z`, sorts as it happens)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_wall(value: datetime) -> str:
    """A wall-clock time (no zone) as an occurrence string (`2026-12-02T10:00:00`)."""
    return value.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S")


def parse_send_at(raw: Any, *, local: bool, zone: str | None = None) -> datetime:
    """`schedule.sendAt`: an aware UTC instant, or (local) a naive wall-clock time.

    Without an offset, a UTC sendAt is read in `zone` (`schedule.timezone`), else in UTC.
    """
    value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    if local:
        if value.tzinfo is not None:
            raise ValueError("a local wall-clock time without offset, e.g. 2026-12-02T10:00:00")
        return value.replace(microsecond=0)
    if value.microsecond:  # occurrences are whole seconds: never before the time asked
        value = value.replace(microsecond=0) + timedelta(seconds=1)
    if value.tzinfo is None:
        if zone and zone_ok(zone):
            return local_instant(value, zone)
        value = value.replace(tzinfo=UTC)  # no offset = UTC, as everywhere in the API
    return value.astimezone(UTC)


def send_at(campaign_schedule: Mapping[str, Any]) -> datetime:
    """A schedule's sendAt as used: UTC instant, or wall time for userTimezone delivery."""
    local = campaign_schedule.get("deliverIn") == "userTimezone"
    return parse_send_at(
        campaign_schedule["sendAt"], local=local, zone=campaign_schedule.get("timezone")
    )


def zone_ok(name: Any) -> bool:
    """Whether `name` is a time zone zoneinfo knows."""
    if not isinstance(name, str) or not name or name.startswith("/"):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def project_zone(project: Project) -> str:
    """The zone for users without one: the project's (quiet-hours zone today), else UTC."""
    settings = project.settings or {}
    for name in (settings.get("timezone"), (settings.get("quietHours") or {}).get("timezone")):
        if zone_ok(name):
            return str(name)
    return "UTC"


def local_instant(wall: datetime, zone: str) -> datetime:
    """The UTC instant of a wall-clock time in `zone`.

    A time that happens twice (fall back) → the first; one that does not exist (spring
    forward) → the first valid instant after it (the transition: 02:30 → 03:00 CEST).
    """
    tz = ZoneInfo(zone)
    wall = wall.replace(tzinfo=None)
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In the gap: the fold=1 reading lands before the gap, fold=0 after; the transition is the
    # first second whose local reading is not before `wall` (a two-hour span at most).
    lo = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = min(lo, first), max(lo, first)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def _cron(expr: str, start: datetime) -> Any:
    from cronsim import CronSim

    return CronSim(expr, start)


def cron_problem(expr: Any) -> str | None:
    """Why `expr` is not a 5-field cron expression, or None."""
    if not isinstance(expr, str) or len(expr.split()) != 5:
        return "a 5-field cron expression (minute hour day month weekday), e.g. 0 10 * * 1"
    try:
        next(_cron(expr, datetime(2026, 1, 1)))
    except Exception as err:  # cronsim raises CronSimError (a ValueError) for bad fields
        return f"not a valid cron expression: {err}"
    return None


def cron_after(schedule: Mapping[str, Any], after: datetime) -> datetime:
    """The first tick of a recurring schedule strictly after `after`.

    UTC delivery: an aware instant (cron read in `schedule.timezone`); local delivery: a naive
    wall-clock time (applied in each user's zone by `plan`).
    """
    expr = str(schedule["cron"])
    if schedule.get("deliverIn") == "userTimezone":
        return next(_cron(expr, after.replace(tzinfo=None, microsecond=0)))
    tz = ZoneInfo(schedule.get("timezone") or "UTC")
    return next(_cron(expr, after.astimezone(tz))).astimezone(UTC)


def cron_at_or_before(schedule: Mapping[str, Any], at: datetime) -> datetime:
    """The latest tick of a recurring schedule at or before `at` (as `cron_after` gives them)."""
    expr = str(schedule["cron"])
    if schedule.get("deliverIn") == "userTimezone":
        start = at.replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        return next(_cron_reverse(expr, start))
    tz = ZoneInfo(schedule.get("timezone") or "UTC")
    start = (at + timedelta(seconds=1)).astimezone(tz)
    return next(_cron_reverse(expr, start)).astimezone(UTC)


def _cron_reverse(expr: str, start: datetime) -> Any:
    from cronsim import CronSim

    return CronSim(expr, start, reverse=True)


def schedule_problems(kind: str, fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """Errors of a broadcast or recurring campaign's `schedule`, by field path."""
    schedule = fields.get("schedule") or {}
    errors: dict[str, list[str]] = {}
    if not isinstance(schedule, Mapping):
        return {"schedule": ["an object"]}
    deliver_in = schedule.get("deliverIn") or "utc"
    if deliver_in not in ("utc", "userTimezone"):
        errors["schedule.deliverIn"] = ['"utc" or "userTimezone"']
    missed = schedule.get("missedLocalTime") or "skip"
    if missed not in ("skip", "sendNow"):
        errors["schedule.missedLocalTime"] = ['"skip" or "sendNow"']
    zone = schedule.get("timezone")
    if zone is not None and not zone_ok(zone):
        errors["schedule.timezone"] = ["not an IANA time zone name (e.g. Europe/Paris)"]
    local = deliver_in == "userTimezone"
    if kind == "broadcast":
        if schedule.get("cron") is not None:
            errors["schedule.cron"] = ["only recurring campaigns have a cron"]
        raw = schedule.get("sendAt")
        if raw is None and local:
            errors["schedule.sendAt"] = ["required with deliverIn userTimezone (a wall time)"]
        elif raw is not None:
            try:
                parse_send_at(raw, local=local, zone=zone if zone_ok(zone) else None)
            except (TypeError, ValueError) as err:
                errors["schedule.sendAt"] = [
                    str(err) if local else "an ISO 8601 date-time, e.g. 2026-12-02T10:00:00Z"
                ]
        if local and zone is not None:
            errors["schedule.timezone"] = ["not used with deliverIn userTimezone"]
    else:
        problem = cron_problem(schedule.get("cron"))
        if problem:
            errors["schedule.cron"] = [problem]
        if schedule.get("sendAt") is not None:
            errors["schedule.sendAt"] = ["recurring campaigns use cron, not sendAt"]
    return errors


# --- what the scheduler's job store should hold ---------------------------------------------

_fired: dict[int, tuple[str, float]] = {}
_fired_lock = threading.Lock()


def fire(campaign_id: int, occurrence: str) -> None:
    """The APScheduler job (`workers.campaign_schedule:fire`): only enqueues the plan."""
    from workers.actors import plan_campaign

    with _fired_lock:
        _fired[campaign_id] = (occurrence, time.monotonic())
    plan_campaign.send(campaign_id, occurrence)


def _recently_fired(campaign_id: int) -> str | None:
    with _fired_lock:
        got = _fired.get(campaign_id)
    if got is None or time.monotonic() - got[1] > FIRE_GRACE_SECONDS:
        return None
    return got[0]


def _local(campaign: Campaign) -> bool:
    return (campaign.schedule or {}).get("deliverIn") == "userTimezone"


def _fire_at(campaign: Campaign, occurrence: str) -> datetime:
    if _local(campaign):
        wall = datetime.fromisoformat(occurrence).replace(tzinfo=UTC)
        return wall - EARLIEST_OFFSET
    return datetime.fromisoformat(occurrence)


def broadcast_occurrence(campaign: Campaign, now: datetime) -> str:
    """A broadcast's one occurrence: its sendAt (an instant, or a wall time if local)."""
    schedule = campaign.schedule or {}
    local = _local(campaign)
    if schedule.get("sendAt") is not None:
        at = send_at(schedule)
        return fmt_wall(at) if local else fmt_instant(at)
    return fmt_instant(campaign.activated_at or now)


def next_occurrence(
    campaign: Campaign, last_planned: str | None, now: datetime
) -> tuple[str, datetime] | None:
    """The occurrence the campaign's job should fire next (and when), or None.

    `last_planned`: for a broadcast, its occurrence if it is planned already; for a recurring
    campaign, the latest occurrence planned (or recorded skipped).
    """
    schedule = campaign.schedule or {}
    local = _local(campaign)
    if campaign.kind == "broadcast":
        if last_planned is not None:
            return None  # a broadcast has one occurrence; it is planned
        occurrence = broadcast_occurrence(campaign, now)
        fire_at = _fire_at(campaign, occurrence)
        if not local and campaign.ends_at is not None and fire_at >= campaign.ends_at:
            return None
        return occurrence, fire_at
    # recurring: the tick after the last planned one (or activation, or the window start)
    anchors = [campaign.activated_at or campaign.created_at or now]
    if campaign.starts_at is not None:
        anchors.append(campaign.starts_at - timedelta(seconds=1))
    if last_planned is not None:
        planned = datetime.fromisoformat(last_planned.split("|")[0])
        anchors.append(planned if planned.tzinfo else planned.replace(tzinfo=UTC))
    anchor = max(a if a.tzinfo else a.replace(tzinfo=UTC) for a in anchors)
    tick = cron_after(schedule, anchor)
    # After downtime only the latest missed tick is planned (coalesced): it is sent late
    # within its TTL, else recorded expired.
    if _fire_at(campaign, _occ(campaign, tick)) <= now:
        latest = cron_at_or_before(schedule, now + EARLIEST_OFFSET if local else now)
        if latest > tick:
            tick = latest
    occurrence = _occ(campaign, tick)
    fire_at = _fire_at(campaign, occurrence)
    if campaign.ends_at is not None:
        due = tick.replace(tzinfo=UTC) - EARLIEST_OFFSET if local else tick
        if due >= campaign.ends_at:
            return None
    return occurrence, fire_at


def _occ(campaign: Campaign, tick: datetime) -> str:
    return fmt_wall(tick) if _local(campaign) else fmt_instant(tick)


def _is_planned(session: Session, campaign_id: int, occurrence: str) -> bool:
    """Whether the occurrence has runs (cancelled ones, from an edit that moved it, excepted)."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    CampaignRun.campaign_id == campaign_id,
                    or_(
                        CampaignRun.occurrence == occurrence,
                        CampaignRun.occurrence.startswith(occurrence + "|", autoescape=True),
                    ),
                    or_(CampaignRun.status != "cancelled", CampaignRun.reason != MOVED_REASON),
                )
            )
        )
    )


def unplan_moved(session: Session, campaign: Campaign, now: datetime) -> int:
    """After an edit: cancel scheduled runs the schedule no longer has; how many."""
    if campaign.kind == "broadcast":
        occurrence = broadcast_occurrence(campaign, now)

        def keep(occ: str) -> bool:
            return occ.split("|")[0] == occurrence
    else:

        def keep(occ: str) -> bool:
            nominal = datetime.fromisoformat(occ.split("|")[0])
            try:
                return cron_after(campaign.schedule or {}, nominal - timedelta(seconds=1)) == (
                    nominal
                )
            except Exception:
                return False

    runs = session.scalars(
        select(CampaignRun).where(
            CampaignRun.campaign_id == campaign.id, CampaignRun.status == "scheduled"
        )
    )
    moved = [run for run in runs if not keep(run.occurrence)]
    for run in moved:
        _finish(run, "cancelled", MOVED_REASON, now)
    session.flush()
    return len(moved)


def _last_planned(session: Session, campaign_ids: list[int]) -> dict[int, str]:
    if not campaign_ids:
        return {}
    rows = session.execute(
        select(CampaignRun.campaign_id, func.max(CampaignRun.occurrence))
        .where(CampaignRun.campaign_id.in_(campaign_ids))
        .group_by(CampaignRun.campaign_id)
    )
    return {cid: occ for cid, occ in rows}


def desired_jobs(session: Session, now: datetime) -> dict[str, tuple[datetime, tuple[Any, ...]]]:
    """{job id: (run date, args)}: the date job each active scheduled campaign should have."""
    campaigns = list(
        session.scalars(
            select(Campaign).where(Campaign.status == "active", Campaign.kind.in_(SCHEDULED_KINDS))
        )
    )
    last = _last_planned(session, [c.id for c in campaigns if c.kind == "recurring"])
    jobs: dict[str, tuple[datetime, tuple[Any, ...]]] = {}
    for campaign in campaigns:
        fired = _recently_fired(campaign.id)
        if campaign.kind == "broadcast":
            try:
                occurrence = broadcast_occurrence(campaign, now)
            except (TypeError, ValueError):
                continue
            done = occurrence == fired or _is_planned(session, campaign.id, occurrence)
            planned = occurrence if done else None
        else:
            planned = last.get(campaign.id)
            if fired is not None and (planned is None or fired > planned.split("|")[0]):
                planned = fired
        try:
            nxt = next_occurrence(campaign, planned, now)
        except Exception:  # a schedule saved before validation existed must not stop the rest
            continue
        if nxt is not None:
            occurrence, fire_at = nxt
            jobs[f"campaign:{campaign.id}"] = (fire_at, (campaign.id, occurrence))
    return jobs


# --- plan: an occurrence's runs ---------------------------------------------------------------


def _target_zones(session: Session, campaign: Campaign, now: datetime) -> set[str]:
    from app.services.segments import members_clause
    from journeys.filters import parse_filter

    where = members_clause(
        parse_filter(target_tree(campaign.target)),
        project_id=campaign.project_id,
        dialect_name=session.get_bind().dialect.name,
        now=now,
    )
    names = session.scalars(select(User.timezone).where(where).distinct())
    return {n for n in names if n is not None and zone_ok(n)}


def plan(
    session: Session,
    campaign_id: int,
    occurrence: str,
    settings: Mapping[str, Any],
    now: datetime | None = None,
    *,
    activating: bool = False,
) -> list[CampaignRun]:
    """Create the runs of one occurrence (once: unique per campaign); start those due now.

    `activating`: called by activate() itself, before the service has set the status.
    """
    now = now or utcnow()
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.kind not in SCHEDULED_KINDS:
        return []
    if campaign.status != "active" and not activating:
        return []
    project = session.get(Project, campaign.project_id)
    assert project is not None
    schedule = campaign.schedule or {}
    ttl = timedelta(seconds=campaign.ttl_seconds) if campaign.ttl_seconds else None
    rows: list[dict[str, Any]] = []

    def add(occ: str, zone: str | None, due: datetime, status: str, reason: str | None) -> None:
        if status == "scheduled" and not in_window(campaign.starts_at, campaign.ends_at, due):
            status, reason = "skipped", f"due {due.isoformat()}, outside the campaign window"
        rows.append(
            {
                "project_id": campaign.project_id,
                "campaign_id": campaign.id,
                "occurrence": occ[:100],
                "zone": zone,
                "due_at": due,
                "expires_at": due + ttl if ttl else None,
                "status": status,
                "reason": reason,
                "campaign_version": campaign.version,
                "created_at": now,
                "finished_at": None if status == "scheduled" else now,
            }
        )

    if not _local(campaign):
        add(occurrence, None, datetime.fromisoformat(occurrence), "scheduled", None)
    else:
        wall = datetime.fromisoformat(occurrence)
        fallback = project_zone(project)
        send_now = schedule.get("missedLocalTime") == "sendNow"
        for zone in sorted(_target_zones(session, campaign, now) | {fallback}):
            due = local_instant(wall, zone)
            note = FALLBACK_NOTE if zone == fallback else None
            status = "scheduled"
            if due < now:
                passed = f"{wall.strftime('%H:%M')} had already passed in {zone} when planned"
                if send_now:
                    due, note = now, f"{passed}; sent now (missedLocalTime: sendNow)"
                else:
                    status, note = "skipped", f"{passed} (missedLocalTime: skip)"
            add(f"{occurrence}|{zone}", zone, due, status, note)
    if rows:
        session.execute(insert_ignore(session, CampaignRun, ["campaign_id", "occurrence"]), rows)
    session.flush()
    runs = list(
        session.scalars(
            select(CampaignRun)
            .where(
                CampaignRun.campaign_id == campaign.id,
                CampaignRun.occurrence.in_([r["occurrence"] for r in rows]),
            )
            .order_by(CampaignRun.due_at)
        )
    )
    for run in runs:
        if run.status == "scheduled" and run.due_at <= now:
            defer(session, "start_campaign_run", run.id)
    return runs


# --- start: a due run's sends ------------------------------------------------------------------


def _finish(run: CampaignRun, status: str, reason: str, now: datetime) -> None:
    run.status, run.reason, run.finished_at = status, reason, now


def start_run(
    session: Session, run_id: int, settings: Mapping[str, Any], now: datetime | None = None
) -> CampaignRun | None:
    """Start a due run once: create its sends (they fan out), or record why it will not send."""
    from app.services.campaign_sends import create_campaign_sends

    now = now or utcnow()
    run = session.get(CampaignRun, run_id)
    if run is None or run.status != "scheduled" or run.due_at > now:
        return None
    campaign = session.get(Campaign, run.campaign_id)
    if campaign is None or campaign.status == "paused":
        return None  # a paused campaign's due runs wait; resume applies their TTL
    if campaign.status != "active":
        _finish(run, "cancelled", f"campaign {campaign.status}", now)
        session.flush()
        return run
    if run.expires_at is not None and now >= run.expires_at:
        _finish(
            run,
            "expired",
            f"not started by {run.expires_at.isoformat()} (due {run.due_at.isoformat()}, "
            "ttlSeconds passed, e.g. the scheduler was down): not sent",
            now,
        )
        session.flush()
        return run
    if campaign.ends_at is not None and now >= campaign.ends_at:
        _finish(run, "skipped", "the campaign window ended before it could start", now)
        session.flush()
        return run
    claimed = session.scalar(
        update(CampaignRun)
        .where(CampaignRun.id == run.id, CampaignRun.status == "scheduled")
        .values(status="running", started_at=now)
        .returning(CampaignRun.id)
    )
    if claimed is None:
        return None
    session.refresh(run)
    fallback = run.reason is not None and run.reason.startswith(FALLBACK_NOTE)
    others: list[str] = []
    if run.zone is not None and fallback:
        prefix = run.occurrence.split("|")[0] + "|"
        others = [
            z
            for z in session.scalars(
                select(CampaignRun.zone).where(
                    CampaignRun.campaign_id == run.campaign_id,
                    CampaignRun.occurrence.startswith(prefix, autoescape=True),
                )
            )
            if z is not None and z != run.zone
        ]
    project = session.get(Project, campaign.project_id)
    assert project is not None
    # One dedup key per occurrence across its zone runs: a user who changes zone between two
    # slots is not reached twice.
    sends = create_campaign_sends(
        session,
        project=project,
        campaign=campaign,
        occurrence=run.occurrence.split("|")[0],
        now=now,
        fan_out=True,
        run_id=run.id,
    )
    for send in sends:
        if run.zone is not None:
            # workers.fanout._audience reads these: users of this zone; the fallback run also
            # takes users whose zone is NULL, unknown or not planned (`otherZones` excluded).
            zone_target: dict[str, Any] = {"zone": run.zone}
            if fallback:
                zone_target["otherZones"] = sorted(others)
            send.target = {**(send.target or {}), **zone_target}
    run.send_id = sends[0].id if sends else None
    late = now - run.due_at
    if not sends:
        _finish(run, "done", "no channels to send on", now)
    elif late > timedelta(seconds=LATE_SECONDS):
        lateness = f"sent {int(late.total_seconds())} s late (due {run.due_at.isoformat()})"
        run.reason = f"{run.reason}; {lateness}" if run.reason else lateness
    session.flush()
    return run


def start_due_runs(
    session: Session, now: datetime, settings: Mapping[str, Any], limit: int = 50
) -> int:
    """Start (or expire) up to `limit` due runs of active campaigns; how many were handled."""
    ids = list(
        session.scalars(
            select(CampaignRun.id)
            .join(Campaign, Campaign.id == CampaignRun.campaign_id)
            .where(
                CampaignRun.status == "scheduled",
                CampaignRun.due_at <= now,
                Campaign.status != "paused",
            )
            .order_by(CampaignRun.due_at)
            .limit(limit)
        )
    )
    return sum(1 for run_id in ids if start_run(session, run_id, settings, now) is not None)


def finish_runs(session: Session, now: datetime) -> int:
    """Running runs whose sends all finished fanning out become `done`."""
    unfinished = exists().where(Send.run_id == CampaignRun.id, Send.status != "done")
    ids = list(
        session.scalars(
            select(CampaignRun.id).where(CampaignRun.status == "running", ~unfinished).limit(500)
        )
    )
    if ids:
        session.execute(
            update(CampaignRun)
            .where(CampaignRun.id.in_(ids))
            .values(status="done", finished_at=now)
        )
    return len(ids)


def _pending_messages(campaign_id: Any) -> Any:
    return exists().where(
        Message.send_id == Send.id, Send.campaign_id == campaign_id, Message.status.in_(PENDING)
    )


def complete_campaigns(session: Session, now: datetime) -> int:
    """Campaigns that are over → completed: a broadcast whose runs all ended, a recurring,
    triggered or API campaign whose window ended; every message of theirs ended."""
    open_runs = exists().where(
        CampaignRun.campaign_id == Campaign.id, CampaignRun.status.in_(("scheduled", "running"))
    )
    any_run = exists().where(CampaignRun.campaign_id == Campaign.id)
    window_over = and_(Campaign.ends_at.is_not(None), Campaign.ends_at <= now)
    over = or_(and_(Campaign.kind == "broadcast", any_run), window_over)
    candidates = list(
        session.scalars(
            select(Campaign)
            .where(
                Campaign.status == "active",
                or_(
                    and_(Campaign.kind.in_(SCHEDULED_KINDS), over, ~open_runs),
                    # Triggered and API campaigns run until their window ends.
                    and_(Campaign.kind.in_(("triggered", "api")), window_over),
                ),
                ~_pending_messages(Campaign.id),
            )
            .limit(100)
        )
    )
    for campaign in candidates:
        ran = session.scalar(select(exists().where(CampaignRun.campaign_id == campaign.id)))
        campaign.status = "completed"
        campaign.completed_at = now
        campaign.updated_at = now
        sent = ran or session.scalar(select(exists().where(Send.campaign_id == campaign.id)))
        campaign.status_reason = (
            "every run finished and every message ended"
            if ran and campaign.kind == "broadcast"
            else "the campaign window ended" + ("" if sent else " before anything was sent")
        )
    session.flush()
    return len(candidates)


def auto_pause(session: Session, now: datetime) -> int:
    """Pause active campaigns whose running sends fail past their threshold; how many."""
    from workers.campaigns import KINDS

    running = (
        select(Send.id, Send.campaign_id)
        .join(Campaign, Campaign.id == Send.campaign_id)
        .where(
            Campaign.status == "active",
            or_(
                Send.status != "done",
                exists().where(Message.send_id == Send.id, Message.status.in_(PENDING)),
            ),
        )
        .subquery()
    )
    rows = session.execute(
        select(running.c.campaign_id, Message.status, func.count())
        .join(running, running.c.id == Message.send_id)
        .where(Message.status.in_(ATTEMPTED))
        .group_by(running.c.campaign_id, Message.status)
    )
    counts: dict[int, dict[str, int]] = {}
    for campaign_id, status, n in rows:
        counts.setdefault(campaign_id, {})[status] = n
    paused = 0
    for campaign_id, by_status in counts.items():
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status != "active":
            continue
        config = {**AUTO_PAUSE_DEFAULT, **((campaign.options or {}).get("autoPause") or {})}
        if config.get("enabled") is False:
            continue
        attempted = sum(by_status.values())
        failed = by_status.get("failed", 0)
        if attempted < int(config["minMessages"]) or failed / attempted <= float(
            config["failureRate"]
        ):
            continue
        campaign.status = "paused"
        campaign.updated_at = now
        campaign.status_reason = (
            f"auto-paused: {failed} of {attempted} messages failed ({failed / attempted:.0%}, "
            f"threshold {float(config['failureRate']):.0%} over at least "
            f"{int(config['minMessages'])} messages)"
        )
        KINDS[campaign.kind].pause(session, campaign, now)
        paused += 1
    session.flush()
    return paused


# --- pause, resume, archive (shared by the kinds that fan out) ------------------------------


def _campaign_sends(campaign: Campaign) -> Any:
    return select(Send.id).where(Send.campaign_id == campaign.id).scalar_subquery()


def hold(session: Session, campaign: Campaign, now: datetime) -> int:
    """Stop the campaign's fan-outs and hold its queued messages; how many were held."""
    session.execute(
        update(Send)
        .where(Send.campaign_id == campaign.id, Send.status == "fanning_out")
        .values(status="paused", lease_until=None)
        .execution_options(synchronize_session=False)
    )
    held = session.execute(
        update(Message)
        .where(Message.send_id.in_(_campaign_sends(campaign)), Message.status == "queued")
        .values(not_before=HELD, enqueued_at=None, reason=HELD_REASON, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(held, "rowcount", 0) or 0)


def release(session: Session, campaign: Campaign, now: datetime) -> int:
    """Resume held messages and paused fan-outs (nothing reached is sent again); how many."""
    from app.services.outbox import FANOUT_LEASE, enqueue_delivery
    from workers.fanout import spread

    paused = list(
        session.scalars(
            select(Send).where(Send.campaign_id == campaign.id, Send.status == "paused")
        )
    )
    for send in paused:
        run = session.get(CampaignRun, send.run_id) if send.run_id else None
        if run is not None and run.expires_at is not None and now >= run.expires_at:
            send.status, send.finished_at = "done", now
            note = "its TTL passed while paused: the rest of the audience was not sent"
            run.reason = f"{run.reason}; {note}" if run.reason else note
            continue
        send.status, send.lease_until = "fanning_out", now + FANOUT_LEASE
        defer(session, "fan_out_send", send.id)
    released = 0
    spread_sends = list(
        session.scalars(
            select(Send).where(
                Send.campaign_id == campaign.id,
                Send.rate_per_minute.is_not(None),
                exists().where(
                    Message.send_id == Send.id,
                    Message.status == "queued",
                    Message.not_before == HELD,
                ),
            )
        )
    )
    for send in spread_sends:
        released += spread(session, send, base=now, offset=0, held_only=True)
    ids = list(
        session.scalars(
            update(Message)
            .where(
                Message.send_id.in_(_campaign_sends(campaign)),
                Message.status == "queued",
                Message.not_before == HELD,
            )
            .values(not_before=None, enqueued_at=now, reason=None, updated_at=now)
            .returning(Message.id)
            .execution_options(synchronize_session=False)
        )
    )
    enqueue_delivery(session, ids)
    session.flush()
    return released + len(ids)


def cancel_pending(session: Session, campaign: Campaign, now: datetime, reason: str) -> int:
    """Cancel the campaign's scheduled runs, fan-outs and queued messages (archive)."""
    session.execute(
        update(CampaignRun)
        .where(CampaignRun.campaign_id == campaign.id, CampaignRun.status == "scheduled")
        .values(status="cancelled", reason=reason, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Send)
        .where(Send.campaign_id == campaign.id, Send.status.in_(("fanning_out", "paused")))
        .values(status="done", finished_at=now, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    ids = list(
        session.scalars(
            update(Message)
            .where(Message.send_id.in_(_campaign_sends(campaign)), Message.status == "queued")
            .values(status="cancelled", reason=reason, updated_at=now)
            .returning(Message.id)
            .execution_options(synchronize_session=False)
        )
    )
    if ids:
        session.execute(
            insert(MessageStatusChange),
            [{"message_id": i, "status": "cancelled", "reason": reason, "at": now} for i in ids],
        )
    session.flush()
    return len(ids)


def audience_warning(session: Session, campaign: Campaign, now: datetime) -> str | None:
    """A warning when audience ÷ rate exceeds the TTL (the last messages would expire)."""
    if not campaign.rate_per_minute or not campaign.ttl_seconds:
        return None
    from app.services.segments import members_clause
    from journeys.filters import parse_filter

    where = members_clause(
        parse_filter(target_tree(campaign.target)),
        project_id=campaign.project_id,
        dialect_name=session.get_bind().dialect.name,
        now=now,
    )
    users = session.scalar(select(func.count()).select_from(User).where(where)) or 0
    messages = users * max(1, len(campaign.channels or {}))
    minutes = messages / campaign.rate_per_minute
    if minutes * 60 <= campaign.ttl_seconds:
        return None
    return (
        f"at rateLimit.perMinute {campaign.rate_per_minute}, up to {messages} messages take "
        f"{minutes:.0f} min, longer than ttlSeconds ({campaign.ttl_seconds} s): the last ones "
        "would expire before they are sent"
    )
