"""The dry run: what activating a campaign would do now, decided by delivery's own code.

Nothing is written: the target is read with the fan-out's SQL, each hypothetical message is a
plain object the delivery decision accepts (`workers.delivery.Decidable`), its facts are read
by the delivery's own loaders (`load_facts`) and it is decided by `workers.delivery.decide`,
the function real delivery calls for every message. So the counts are what a real send does.

Counting units: `not_in_target`, `outside_window`, `holdout` and `missed_local_time` count
users; `no_address` counts (user, channel) pairs; every other reason and `byChannel` count
messages (one per address: a user with two push devices has two). `reached` counts users who
would get at least one message. Quiet hours in `defer` mode delay a message rather than drop
it (as delivery does): it is reached, counted in `deferred.quiet_hours`, and placed in the
schedule at the end of the window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Campaign, Project, User
from journeys.campaigns import in_holdout, in_window, target_tree
from journeys.delivery_policy import DEFER, EXPIRE, SEND, Decision
from workers.campaign_schedule import cron_after, local_instant, project_zone, send_at, zone_ok
from workers.channels import CHANNELS
from workers.delivery import decide, load_facts

# Target users evaluated per request; beyond it the answer says `truncated` (and counts only
# the first MAX_USERS by id): the dry run answers in seconds, not like a fan-out.
MAX_USERS = 100_000
# Users per read (their addresses, suppressions, recent sends, topic memberships).
CHUNK = 2_000
# A deferred message is decided again at the end of its wait, as the sweeper would; bounded.
MAX_DEFERRALS = 3
SCHEDULED_KINDS = ("broadcast", "recurring")
USER_COLUMNS = (
    User.id,
    User.project_id,
    User.external_id,
    User.email,
    User.phone,
    User.timezone,
    User.preferences,
)


@dataclass(frozen=True)
class Attempt:
    """A message the campaign would create (the fields `workers.delivery.decide` reads)."""

    project_id: int
    user_id: int | None
    send_id: int | None
    channel: str
    address: str
    transactional: bool
    expires_at: datetime | None


@dataclass(frozen=True)
class _PlannedSend:
    """One of the sends the campaign would create (one per template); ids are negative, so
    no loader ever matches a stored send."""

    id: int
    channels: tuple[str, ...]
    topic: str | None


def skip_reason(status: str, reason: str | None) -> str:
    """The dry run's reason for a message that does not go out, from delivery's status and
    reason (shared with the stats, which classify real messages the same way)."""
    if status == "expired":
        return "expired"
    text = reason or ""
    if text.startswith("frequency cap"):
        return "capped"
    if text.startswith("quiet hours"):
        return "quiet_hours"
    if (
        text.startswith("address suppressed")
        or text.startswith("opted out")
        or text.startswith("not subscribed to topic")
    ):
        return "opted_out"
    return status


def _decided_reason(decision: Decision) -> str:
    return skip_reason("expired" if decision.action == EXPIRE else "suppressed", decision.reason)


def _planned_sends(campaign: Campaign) -> list[_PlannedSend]:
    """The sends `create_campaign_sends` would make: one per template, channels in order."""
    by_template: dict[int, list[str]] = {}
    for channel, template_id in (campaign.channels or {}).items():
        by_template.setdefault(int(template_id), []).append(channel)
    return [
        _PlannedSend(-(n + 1), tuple(chs), campaign.topic)
        for n, chs in enumerate(by_template.values())
    ]


@dataclass
class _Timing:
    """When each user's messages would go out."""

    campaign: Campaign
    project: Project
    now: datetime

    def __post_init__(self) -> None:
        # The scheduler's own readings (workers.campaign_schedule), so that the hours shown
        # are those the runs get: sendAt, the next cron tick (cronsim), the project's zone
        # for users without one, and the DST rule of a local time.
        schedule = self.campaign.schedule or {}
        self.local = schedule.get("deliverIn") == "userTimezone"
        self.send_now = schedule.get("missedLocalTime") == "sendNow"
        self.fallback = project_zone(self.project)
        start: datetime | None = None
        try:
            if self.campaign.kind == "broadcast" and schedule.get("sendAt"):
                start = send_at(schedule)
            elif self.campaign.kind == "recurring" and schedule.get("cron"):
                start = cron_after(schedule, self.now)
        except ValueError:  # refused on save; an old row's bad value sends now
            start = None
        # Local delivery: `start` is a wall-clock time, applied in each user's zone.
        self.wall = (
            start if self.local and self.campaign.kind in ("broadcast", "recurring") else None
        )
        # A time already past when activated is sent now (a missed broadcast is sent late).
        self.start = (
            start if self.wall is None and start is not None and start > self.now else self.now
        )

    def instant(self, user: Any) -> datetime | None:
        """This user's send instant; None when their local time has passed (`skip`)."""
        if self.wall is None:
            return self.start
        zone = user.timezone if zone_ok(user.timezone) else self.fallback
        at = local_instant(self.wall, zone)
        if at >= self.now:
            return at
        return self.now if self.send_now else None


def _hour(moment: datetime) -> datetime:
    """The UTC hour a moment falls in (what the per-hour schedule groups by)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _spread(at: list[datetime], rate_per_minute: int | None) -> list[datetime]:
    """Instants after rate spreading: the k-th message of one instant goes k/rate min later."""
    if not rate_per_minute:
        return at
    seen: Counter[datetime] = Counter()
    out = []
    for moment in sorted(at):
        out.append(moment + timedelta(minutes=seen[moment] / rate_per_minute))
        seen[moment] += 1
    return out


def simulate(session: Session, *, project: Project, campaign: Campaign, now: datetime) -> dict:
    """What activating `campaign` now would do: reached, byChannel, skipped, schedule."""
    from app.services.segments import members_clause
    from journeys.filters import parse_filter

    dialect = session.get_bind().dialect.name
    everyone = members_clause(
        parse_filter({"all": []}), project_id=project.id, dialect_name=dialect, now=now
    )
    target = members_clause(
        parse_filter(target_tree(campaign.target)),
        project_id=project.id,
        dialect_name=dialect,
        now=now,
    )
    total = session.scalar(select(func.count()).select_from(User).where(everyone)) or 0
    in_target = session.scalar(select(func.count()).select_from(User).where(target)) or 0
    skipped: Counter[str] = Counter()
    if total > in_target:
        skipped["not_in_target"] = total - in_target
    deferred: Counter[str] = Counter()
    by_channel: Counter[str] = Counter()
    reached: set[int] = set()
    instants: list[datetime] = []
    sends = _planned_sends(campaign)
    send_map = {s.id: s for s in sends}
    timing = _Timing(campaign, project, now)
    transactional = campaign.category == "transactional"
    seen: set[tuple[str, str]] = set()  # (channel, address): the occurrence's dedup key
    evaluated = 0
    cursor = 0
    while evaluated < MAX_USERS:
        # Plain rows, not entities: they carry what the channels' `addresses_of` and the
        # decision read (`Addressable` + preferences, timezone), at a fraction of the cost.
        users: list[Any] = list(
            session.execute(
                select(*USER_COLUMNS)
                .where(target, User.id > cursor)
                .order_by(User.id)
                .limit(min(CHUNK, MAX_USERS - evaluated))
            )
        )
        if not users:
            break
        cursor = users[-1].id
        evaluated += len(users)
        plan = _plan_chunk(
            session, users, campaign, sends, timing, transactional, seen, skipped, now
        )
        facts = load_facts(
            session,
            [a for a, _ in plan],
            sends=send_map,
            projects={project.id: project},
            users={u.id: u for u in users},
            now=now,
        )
        for attempt, at in plan:
            decision = decide(attempt, facts, at)
            waited: str | None = None
            for _ in range(MAX_DEFERRALS):
                if decision.action != DEFER or decision.until is None:
                    break
                waited = skip_reason("queued", decision.reason)
                at = decision.until
                decision = decide(attempt, facts, at)
            if decision.action == SEND:
                assert attempt.user_id is not None
                reached.add(attempt.user_id)
                by_channel[attempt.channel] += 1
                instants.append(at)
                if waited is not None:
                    deferred[waited] += 1
            elif decision.action == DEFER:
                skipped["deferred"] += 1  # still waiting after MAX_DEFERRALS windows
            else:
                skipped[_decided_reason(decision)] += 1
    truncated = evaluated < in_target
    schedule: list[dict[str, Any]] = []
    if campaign.kind in SCHEDULED_KINDS:
        hours = Counter(_hour(t) for t in _spread(instants, campaign.rate_per_minute))
        schedule = [{"at": h, "count": n} for h, n in sorted(hours.items())]
    return {
        "reached": len(reached),
        "messages": sum(by_channel.values()),
        "byChannel": dict(by_channel),
        "skipped": dict(skipped),
        "deferred": dict(deferred),
        "schedule": schedule,
        "at": timing.start,
        "evaluated": evaluated,
        "truncated": truncated,
    }


def _plan_chunk(
    session: Session,
    users: Sequence[Any],
    campaign: Campaign,
    sends: Sequence[_PlannedSend],
    timing: _Timing,
    transactional: bool,
    seen: set[tuple[str, str]],
    skipped: Counter[str],
    now: datetime,
) -> list[tuple[Attempt, datetime]]:
    """The messages these target users would get, with each one's send instant; users
    skipped before any message (local time missed, window, holdout, no address) counted."""
    channels = [c for s in sends for c in s.channels if c in CHANNELS]
    addresses = {c: CHANNELS[c].addresses_of(session, users) for c in channels}
    out: list[tuple[Attempt, datetime]] = []
    # Read once: an ORM attribute costs more than the rest of a user's checks.
    campaign_id, percent = campaign.id, campaign.holdout_percent or 0
    starts, ends, ttl = campaign.starts_at, campaign.ends_at, campaign.ttl_seconds
    for user in users:
        at = timing.instant(user)
        if at is None:
            skipped["missed_local_time"] += 1
            continue
        if not in_window(starts, ends, at):
            skipped["outside_window"] += 1
            continue
        if in_holdout(campaign_id, user.id, percent):
            skipped["holdout"] += 1
            continue
        expires = at + timedelta(seconds=ttl) if ttl else None
        for send in sends:
            for channel in send.channels:
                found = addresses.get(channel, {}).get(user.id)
                if not found:
                    skipped["no_address"] += 1
                    continue
                for address in found:
                    if (channel, address) in seen:
                        skipped["deduplicated"] += 1
                        continue
                    seen.add((channel, address))
                    attempt = Attempt(
                        project_id=user.project_id,
                        user_id=user.id,
                        send_id=send.id,
                        channel=channel,
                        address=address,
                        transactional=transactional,
                        expires_at=expires,
                    )
                    out.append((attempt, at))
    return out
