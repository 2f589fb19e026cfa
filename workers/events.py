"""The event processor: rules (with their chains), then triggered campaigns, then goals.

A job carries the ids of committed events. Each event is processed once: `processed_at` is set
in the same transaction as its effects, so a redelivered job finds nothing left to do and a
crash before the commit redoes the event whole.

The events of one user are processed in id order whichever worker gets which job: the job takes
the user's processing lock (a PostgreSQL advisory lock, `app.services.user_locks`; SQLite
serializes writers with BEGIN IMMEDIATE) and processes every unprocessed event of that user
committed so far, in id order.
So a job for a later event that runs first processes the earlier one first, and the job of the
earlier one then finds it done. Ingestion cannot commit a user's earlier event after a later one:
it locks the user row before inserting (`upsert_seen_users_pg`; SQLite serializes). Global
events (no user) are claimed with a conditional UPDATE and processed without a user.

Transactions hold up to USERS_PER_COMMIT users: a commit per user (an fsync each) measured ~60
events/s on PostgreSQL here, against ~1K/s for the same work committed per hundred users.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app.db import bulk_insert, ids_in
from app.models import Audience, Campaign, Event, Project, Rule, RuleFiring, User
from app.models.base import utcnow
from app.services import campaign_goals, campaign_triggers, journey_runs, user_locks
from app.services.audiences import CHAINED_BY_CALLER, MembershipBatch
from app.services.journey_runs import SEGMENTS_CHANGED
from app.services.profiles import merge_attributes
from app.services.rules import ATTRIBUTE_CHANGED, AUDIENCE_ENTERED, AUDIENCE_LEFT
from app.services.user_facts import user_matches
from journeys.rules import MAX_DEPTH, Cause, CompiledRule, Firing, RuleIndex, run_chain
from journeys.rules.definition import AUDIENCE_ACTIONS, action_kind

log = logging.getLogger(__name__)

_CHUNK = 500
# Users per transaction: a commit costs an fsync (several ms), so one per user would cap a
# worker at a few hundred events a second; a bounded group keeps the locks short.
USERS_PER_COMMIT = 100
GLOBAL_PER_COMMIT = 100
# Other users' unprocessed events a job takes along behind a backlog (see process_events).
EXTRA_EVENTS = 400
NO_USER = "global event: no user"


class _Job:
    """What one job loads once for all its events: projects, their rules, audience names."""

    def __init__(self, session: Session, settings: Mapping[str, Any]) -> None:
        self.session = session
        self.max_depth = int(settings.get("RULE_CHAIN_MAX_DEPTH", MAX_DEPTH))
        self._projects: dict[int, Project] = {}
        self._automation: dict[int, Automation] = {}
        # Written together before each commit (`flush`): sends and their messages, firings.
        self.sends = campaign_triggers.SendBatch(session, before_read=self.flush_memberships)
        self.members: MembershipBatch | None = None
        # What the event in hand changes of its user, for segment journeys (None: nothing
        # watches segments, or the event records a change already counted where it was made).
        self.change: journey_runs.DataChange | None = None
        # Users whose row this transaction locked (to change it): reset at each commit.
        self.row_locked: set[int] = set()
        self.firings: list[dict[str, Any]] = []

    def flush_memberships(self) -> None:
        """Write the group's audience changes so far (before anything reads memberships)."""
        if self.members is not None:
            self.members.flush()

    def flush(self) -> None:
        """Write the audience changes, the planned sends, then the firings (whose results
        hold their message ids)."""
        self.flush_memberships()
        self.sends.flush()
        firings, self.firings = self.firings, []
        bulk_insert(self.session, RuleFiring, firings)

    def project(self, project_id: int) -> Project:
        if project_id not in self._projects:
            project = self.session.get(Project, project_id)
            assert project is not None
            self._projects[project_id] = project
        return self._projects[project_id]

    def automation(self, project_id: int) -> Automation:
        """The project's rules, campaign listeners and audience names: checked once per job
        (one query) against what this process loaded before, reloaded only when they changed."""
        if project_id not in self._automation:
            self._automation[project_id] = Automation.current(self.session, project_id)
        return self._automation[project_id]

    def rules(self, project_id: int) -> RuleIndex:
        return self.automation(project_id).rules

    def listeners(self, project_id: int) -> tuple[frozenset[str], frozenset[str]]:
        auto = self.automation(project_id)
        return auto.triggers, auto.goals

    def triggered(self, project_id: int, event_name: str) -> list[Campaign]:
        """The active triggered campaigns listening for this event (detached rows, shared by
        the process's jobs: read, never changed)."""
        return self.automation(project_id).triggered.get(event_name, [])

    def moved_audiences(self, project_id: int) -> set[int]:
        return self.automation(project_id).moved

    def audience_name(self, project_id: int, audience_id: int) -> str | None:
        """The audience's name, None when it no longer exists."""
        return self.automation(project_id).audiences.get(audience_id)


# Loaded automation is reused by the process's jobs while the project's rules, campaigns and
# audiences are unchanged (same count and latest update) and for at most this long (an audience
# rename changes no stamp).
AUTOMATION_MAX_AGE = 10.0
_automation_cache: dict[tuple[str, int], Automation] = {}
_automation_lock = threading.Lock()


@dataclass(frozen=True)
class Automation:
    """What the processor reads about a project's automation, loaded together.

    A single-event job (an event posted alone) would otherwise load and compile every rule,
    campaign listener and audience name for that one event: ~15 ms of a ~40 ms job here.
    """

    stamp: tuple[Any, ...]
    loaded: float
    rules: RuleIndex
    # Event names some campaign triggers on (any status), and goal event names: a superset
    # that spares the hooks a query per event no campaign could be listening for.
    triggers: frozenset[str]
    goals: frozenset[str]
    # Active triggered campaigns by trigger event, detached from the session that loaded them.
    triggered: dict[str, list[Campaign]]
    audiences: dict[int, str]
    moved: set[int]

    @staticmethod
    def _stamp(session: Session, project_id: int) -> tuple[Any, ...]:

        row = session.execute(
            select(
                select(func.count()).where(Rule.project_id == project_id).scalar_subquery(),
                select(func.max(Rule.updated_at))
                .where(Rule.project_id == project_id)
                .scalar_subquery(),
                select(func.count()).where(Campaign.project_id == project_id).scalar_subquery(),
                select(func.max(Campaign.updated_at))
                .where(Campaign.project_id == project_id)
                .scalar_subquery(),
                select(func.count()).where(Audience.project_id == project_id).scalar_subquery(),
                select(func.max(Audience.id))
                .where(Audience.project_id == project_id)
                .scalar_subquery(),
            )
        ).one()
        return tuple(row)

    @classmethod
    def current(cls, session: Session, project_id: int) -> Automation:
        stamp = cls._stamp(session, project_id)
        now = time.monotonic()
        key = (str(session.get_bind().engine.url), project_id)
        cached = _automation_cache.get(key)
        if (
            cached is not None
            and cached.stamp == stamp
            and now - cached.loaded < AUTOMATION_MAX_AGE
        ):
            return cached
        fresh = cls.load(session, project_id, stamp, now)
        with _automation_lock:
            _automation_cache[key] = fresh
        return fresh

    @classmethod
    def load(
        cls, session: Session, project_id: int, stamp: tuple[Any, ...], now: float
    ) -> Automation:
        rows = session.execute(
            select(
                Rule.id,
                Rule.priority,
                Rule.trigger_kind,
                Rule.trigger_key,
                Rule.when,
                Rule.condition,
                Rule.actions,
            ).where(Rule.project_id == project_id, Rule.enabled.is_(True))
        )
        rules = RuleIndex(
            CompiledRule.build(
                id=r.id,
                priority=r.priority,
                trigger_kind=r.trigger_kind,
                trigger_key=r.trigger_key,
                when=r.when,
                condition=r.condition,
                actions=r.actions or [],
            )
            for r in rows
        )
        listening = session.execute(
            select(Campaign.trigger_event, Campaign.goal).where(
                Campaign.project_id == project_id,
                or_(Campaign.trigger_event.is_not(None), Campaign.goal.is_not(None)),
            )
        ).all()
        triggered: dict[str, list[Campaign]] = {}
        # Transient copies (never in a session): the process's jobs share them, read-only.
        columns = Campaign.__table__.columns
        for row in session.execute(
            select(*columns)
            .where(
                Campaign.project_id == project_id,
                Campaign.status == "active",
                Campaign.kind == "triggered",
                Campaign.trigger_event.is_not(None),
            )
            .order_by(Campaign.id)
        ):
            campaign = Campaign(**{c.key: row._mapping[c] for c in columns})
            triggered.setdefault(str(campaign.trigger_event), []).append(campaign)
        audiences = {
            audience_id: name
            for audience_id, name in session.execute(
                select(Audience.id, Audience.name).where(Audience.project_id == project_id)
            )
        }
        moved = {
            int(action[kind])
            for rule in rules.all()
            for action in rule.actions
            for kind in AUDIENCE_ACTIONS
            if kind in action
        }
        return cls(
            stamp=stamp,
            loaded=now,
            rules=rules,
            triggers=frozenset(t for t, _ in listening if t),
            goals=frozenset(
                g["event"]
                for _, g in listening
                if isinstance(g, dict) and isinstance(g.get("event"), str)
            ),
            triggered=triggered,
            audiences=audiences,
            moved=moved,
        )


def process_events(session: Session, event_ids: list[int], settings: Mapping[str, Any]) -> int:
    """Process the given events (and, per user, the earlier unprocessed ones); how many.

    Behind a backlog, the job also takes up to `EXTRA_EVENTS` other users' unprocessed events
    (oldest first), for users no other job holds, and each user's events committed after the
    ones it was given: events posted one by one then share jobs, each job's fixed cost (locks,
    loads, two commits: ~8 ms of CPU here against ~0.7 ms per event in a large job) is paid per
    group instead of per event, and the jobs of those events later find them done (a query).
    Only events committed before the job's own were taken along before; but jobs run roughly in
    the order their events came, so behind a backlog the waiting events are the newer ones, and
    jobs of one or two events each fell further behind (bench/trigger.py: ~80 events/s, 12 s
    late, on two cores).
    """
    ids = sorted({int(i) for i in event_ids})
    pending: list[Any] = []
    for start in range(0, len(ids), _CHUNK):
        pending += session.execute(
            select(Event.id, Event.user_id).where(
                ids_in(session, Event.id, ids[start : start + _CHUNK]), Event.processed_at.is_(None)
            )
        ).all()
    if not pending:
        session.commit()
        return 0
    users = sorted({user_id for _, user_id in pending if user_id is not None})
    extra_limit = int(settings.get("EXTRA_EVENTS", EXTRA_EVENTS))
    extra: list[int] = []
    if extra_limit > 0:
        # `processed_at IS NULL` in id order: the partial index ix_events_pending.
        others = session.execute(
            select(Event.user_id)
            .where(Event.processed_at.is_(None), Event.user_id.is_not(None))
            .order_by(Event.id)
            .limit(extra_limit)
        ).scalars()
        mine = set(users)
        extra = sorted({u for u in others if u is not None and u not in mine})
    session.commit()  # a short read; the work below is in transactions of USERS_PER_COMMIT
    global_ids = sorted(event_id for event_id, user_id in pending if user_id is None)
    job = _Job(session, settings)
    done = 0
    try:
        while users:
            chunk = users[:USERS_PER_COMMIT]
            handled, count = _process_users(job, chunk)
            session.commit()
            done += count
            users = [u for u in users if u not in handled]
        for start in range(0, len(extra), USERS_PER_COMMIT):  # never waited for
            _, count = _process_users(job, extra[start : start + USERS_PER_COMMIT], wait=False)
            session.commit()
            done += count
        for start in range(0, len(global_ids), GLOBAL_PER_COMMIT):
            done += _process_globals(job, global_ids[start : start + GLOBAL_PER_COMMIT])
            session.commit()
    except Exception:
        session.rollback()
        raise
    return done


def _lock_users(session: Session, user_ids: list[int], *, wait: bool = True) -> list[User]:
    """Take the users' processing locks (`app.services.user_locks`) and load them; the ones
    another transaction holds are left out, unless all are, then the first is waited for
    (holding no other lock meanwhile).

    A job never waits while holding a user, so two jobs cannot deadlock; users are handled in id
    order, so neither can a job and an API members call (which locks memberships in user
    order). Ingestion is not held up: it locks the user rows, which a job leaves alone unless
    it changes one (`_lock_row`).
    """
    locked = user_locks.try_lock(session, user_ids)
    if not locked and not wait:
        return []
    if not locked:
        user_locks.lock(session, user_ids[:1])
        locked = {user_ids[0]}
    return list(
        session.scalars(
            select(User)
            .where(ids_in(session, User.id, sorted(locked)))
            .order_by(User.id)
            .execution_options(populate_existing=True)
        )
    )


def _lock_row(job: _Job, user: User) -> None:
    """Before the job changes a user row: lock it and read its attributes afresh (ingestion
    may have changed them since the job loaded the user). Once per user and transaction."""
    if user.id in job.row_locked:
        return
    job.row_locked.add(user.id)
    if job.session.get_bind().dialect.name == "postgresql":
        job.session.flush()
        job.session.refresh(user, ["attributes", "updated_at"], with_for_update=True)


def _process_users(job: _Job, user_ids: list[int], *, wait: bool = True) -> tuple[set[int], int]:
    """One transaction: the users' unprocessed events, each user's in id order.

    Returns the users handled (locked, or gone) and how many events were processed.
    """
    session = job.session
    users = _lock_users(session, user_ids, wait=wait)
    locked = {u.id for u in users}
    handled = set(locked)
    if len(locked) < len(user_ids):
        # Not locked: held by another transaction (the caller tries again) or gone (erased).
        rest = sorted(set(user_ids) - locked)
        existing = set(session.scalars(select(User.id).where(ids_in(session, User.id, rest))))
        handled |= set(rest) - existing
    if not users:
        return handled, 0
    events = list(
        session.scalars(
            select(Event)
            .where(
                ids_in(session, Event.user_id, sorted(locked)),
                Event.processed_at.is_(None),
            )
            .order_by(Event.user_id, Event.id)
        )
    )
    if not events:
        return handled, 0
    now = utcnow()
    by_id = {u.id: u for u in users}
    job.members = MembershipBatch(session, locked, cause="rule", related=job.moved_audiences)
    for event in events:
        assert event.user_id is not None
        _process_event(job, job.project(event.project_id), by_id[event.user_id], event, now)
    job.flush()
    job.members = None
    job.row_locked = set()
    for start in range(0, len(events), _CHUNK):
        session.execute(
            update(Event)
            .where(ids_in(session, Event.id, [e.id for e in events[start : start + _CHUNK]]))
            .values(processed_at=now),
            execution_options={"synchronize_session": False},
        )
    return handled, len(events)


def _process_globals(job: _Job, event_ids: list[int]) -> int:
    """Claim global events with one conditional UPDATE (another job may have them) and
    process the claimed ones in id order, in this transaction."""
    session = job.session
    now = utcnow()
    claimed = list(
        session.scalars(
            update(Event)
            .where(ids_in(session, Event.id, event_ids), Event.processed_at.is_(None))
            .values(processed_at=now)
            .returning(Event.id),
            execution_options={"synchronize_session": False},
        )
    )
    if not claimed:
        return 0
    events = session.scalars(
        select(Event)
        .where(ids_in(session, Event.id, claimed))
        .order_by(Event.id)
        .execution_options(populate_existing=True)
    )
    for event in events:
        if not event.erased:  # an erased user's events lost their user: nothing to run
            _process_event(job, job.project(event.project_id), None, event, now)
    job.flush()
    return len(claimed)


def root_cause(event: Event) -> Cause:
    """The trigger an event stands for: internal audience and attribute events are those
    changes (made outside the processor); any other event is itself."""
    props = event.properties or {}
    if event.source == "internal":
        if event.name in (AUDIENCE_ENTERED, AUDIENCE_LEFT):
            kind = "audienceEntered" if event.name == AUDIENCE_ENTERED else "audienceLeft"
            return Cause(kind, str(props.get("audienceId")), label=props.get("audience"))
        if event.name == ATTRIBUTE_CHANGED:
            return Cause(
                "attributeChanged",
                str(props.get("attribute")),
                before=props.get("from"),
                after=props.get("to"),
            )
    return Cause("event", event.name, properties=props)


# Internal events that record a change counted where it was made (segments included).
_CHANGE_RECORDS = (ATTRIBUTE_CHANGED, AUDIENCE_ENTERED, AUDIENCE_LEFT, SEGMENTS_CHANGED)


def _outside_audience_change(event: Event) -> tuple[int, str | None, bool] | None:
    """(audience id, name, joined) of an internal audience event recording a change made
    outside the processor and journeys (the API, an import, a TTL's expiry), which segments
    judge here, when its event comes; None for any other event."""
    if event.source != "internal" or event.name not in (AUDIENCE_ENTERED, AUDIENCE_LEFT):
        return None
    props = event.properties or {}
    audience_id, name = props.get("audienceId"), props.get("audience")
    if props.get("cause") in CHAINED_BY_CALLER or not isinstance(audience_id, int):
        return None
    return audience_id, name if isinstance(name, str) else None, event.name == AUDIENCE_ENTERED


def _chain_depth(event: Event) -> int:
    """How deep in a chain an internal event a journey's change left stands (0: a root)."""
    depth = (event.properties or {}).get("depth") if event.source == "internal" else None
    return depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else 0


def _process_event(
    job: _Job, project: Project, user: User | None, event: Event, now: datetime
) -> None:
    depth = _chain_depth(event)
    job.change = None
    outside = _outside_audience_change(event)
    if user is not None and (
        outside is not None or not (event.source == "internal" and event.name in _CHANGE_RECORDS)
    ):
        watch = journey_runs.segment_watch(job.session, project.id)
        if watch.active:
            job.flush_memberships()
            job.change = journey_runs.DataChange(
                job.session, watch, user, event, now, audience=outside
            )
    journey_runs.set_chain_depth(job.session, depth, job.max_depth)
    try:
        _handle_event(job, project, user, event, now, depth)
    finally:
        journey_runs.set_chain_depth(job.session, None)
        job.change = None


def _handle_event(
    job: _Job, project: Project, user: User | None, event: Event, now: datetime, depth: int
) -> None:
    index = job.rules(project.id)
    if index:
        firings = run_chain(
            [root_cause(event)],
            index,
            condition_holds=lambda rule: _condition_holds(job, user, rule, now),
            apply=lambda rule, action: _apply(job, project, user, event, rule, action, now),
            now=now,
            # A chain a journey's change continues has that much less room (see _chain_depth).
            max_depth=job.max_depth - depth,
        )
        _record(job, project, user, event, firings, now)
    triggers, goals = job.listeners(project.id)
    if event.name in triggers:
        campaign_triggers.on_event(
            job.session,
            project=project,
            user=user,
            event=event,
            now=now,
            batch=job.sends,
            campaigns=job.triggered(project.id, event.name),
        )
    if user is not None and event.name in goals:
        campaign_goals.on_event(job.session, project=project, user=user, event=event, now=now)
    if user is None:
        return
    # Journeys last: runs waiting for this event, exits and goals, then the journeys it starts.
    if event.name in journey_runs.listening(job.session, project.id):
        journey_runs.on_event(
            job.session, project=project, user=user, event=event, now=now, members=job.members
        )
    if event.source == "internal" and event.name == AUDIENCE_ENTERED:  # joined outside here
        audience_id = (event.properties or {}).get("audienceId")
        if isinstance(audience_id, int):
            journey_runs.on_audience_entered(
                job.session,
                project=project,
                user=user,
                audience_id=audience_id,
                now=now,
                members=job.members,
            )
    if event.source == "internal" and event.name == SEGMENTS_CHANGED:  # changed outside here
        journey_runs.on_segments_changed(
            job.session, user=user, event=event, now=now, members=job.members
        )
    if job.change is not None:  # this event and its rules changed the user: segment journeys
        job.change.finish(job.session, user=user, now=now, members=job.members)


def _condition_holds(job: _Job, user: User | None, rule: CompiledRule, now: datetime) -> bool:
    if rule.condition is None:
        return True
    if user is None:
        return False
    # user_matches reloads the facts: it sees the audience and attribute changes made so far
    # (written first; the session autoflushes the attributes before its queries).
    job.flush_memberships()
    return user_matches(job.session, user, dict(rule.condition), now)


def _apply(
    job: _Job,
    project: Project,
    user: User | None,
    event: Event,
    rule: CompiledRule,
    action: Mapping[str, Any],
    now: datetime,
) -> tuple[dict[str, Any], list[Cause]]:
    kind = action_kind(action)
    result: dict[str, Any] = {kind: action[kind]}
    if user is None:
        return {**result, "result": "skipped", "reason": NO_USER}, []
    session = job.session
    if kind in ("addToAudience", "removeFromAudience"):
        audience_id = int(action[kind])
        name = job.audience_name(project.id, audience_id)
        if name is None:
            return {**result, "result": "skipped", "reason": "audience not found"}, []
        members = job.members
        assert members is not None  # a user's event: inside _process_users
        if kind == "addToAudience":
            joined = members.add(
                project_id=project.id,
                audience_id=audience_id,
                user_pk=user.id,
                ttl_seconds=action.get("ttlSeconds"),
                now=now,
            )
            result["result"] = "joined" if joined else "already member"
            caused = [Cause("audienceEntered", str(audience_id), label=name)] if joined else []
            if joined and job.change is not None:
                job.change.audience(audience_id, name, joined=True)
            if joined:
                journey_runs.on_audience_entered(
                    session,
                    project=project,
                    user=user,
                    audience_id=audience_id,
                    now=now,
                    members=members,
                )
            return result, caused
        removed = members.remove(
            project_id=project.id, audience_id=audience_id, user_pk=user.id, now=now
        )
        result["result"] = "left" if removed else "not a member"
        if removed and job.change is not None:
            job.change.audience(audience_id, name, joined=False)
        caused = [Cause("audienceLeft", str(audience_id), label=name)] if removed else []
        return result, caused
    if kind == "setAttributes":
        _lock_row(job, user)
        before = dict(user.attributes or {})
        after = merge_attributes(before, dict(action[kind]))
        changed = [k for k in action[kind] if _differs(before, after, k)]
        if changed:
            user.attributes = after  # a new dict: JSON columns do not track in-place changes
            user.updated_at = now
            if job.change is not None:
                job.change.set_attributes({k: after.get(k) for k in changed})
        result["result"] = "set" if changed else "unchanged"
        result["changed"] = changed
        return result, [
            Cause("attributeChanged", k, before=before.get(k), after=after.get(k)) for k in changed
        ]
    if kind == "sendCampaign":
        outcome = campaign_triggers.send_campaign_to_user(
            session,
            project=project,
            campaign_id=int(action[kind]),
            user=user,
            params={},
            cause={"rule": rule.id, "event": event.id},
            now=now,
            batch=job.sends,
        )
        # The same dict: the batch fills in its messageIds (and result) when it is written.
        outcome.update(result)
        return outcome, []
    if kind == "startJourney":
        from app.models import Journey

        journey = session.get(Journey, int(action[kind]))
        if journey is None or journey.project_id != project.id:
            return {**result, "result": "skipped", "reason": "journey not found"}, []
        entered = journey_runs.enter(
            session,
            journey=journey,
            user=user,
            params=dict(action.get("params") or {}),
            event=event,
            now=now,
            members=job.members,
        )
        if not entered.entered:
            return {**result, "result": "skipped", "reason": entered.reason}, []
        assert entered.run is not None
        return {**result, "result": "entered", "run": entered.run.id}, []
    return {**result, "result": "skipped", "reason": f"unknown action {kind}"}, []


def _differs(before: Mapping[str, Any], after: Mapping[str, Any], key: str) -> bool:
    if (key in before) != (key in after):
        return True
    old, new = before.get(key), after.get(key)
    return type(old) is not type(new) or old != new


def _record(
    job: _Job,
    project: Project,
    user: User | None,
    event: Event,
    firings: list[Firing],
    now: datetime,
) -> None:
    job.firings.extend(
        [
            {
                "project_id": project.id,
                "rule_id": f.rule.id,
                "user_id": user.id if user is not None else None,
                "event_id": event.id,
                "cause": {**f.cause.to_json(), "chain": list(f.chain)},
                "depth": f.depth,
                "status": f.status,
                "reason": f.reason,
                "actions": f.results,
                "at": now,
            }
            for f in firings
        ]
    )
