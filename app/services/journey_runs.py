"""The journey runtime: runs entered, advanced and persisted; the machine's effects applied.

The decisions are pure (`journeys.journey`); this module loads what they read (the run's
state, the user's facts, the last send's status, a webhook's answer) and writes what they
decide, in the caller's transaction (it flushes, never commits, except `advance_due`, the
sweep body, which commits per batch):

- `Send` → a `sends` row (kind `journey`, template by id, the run's entry properties and saved
  webhook answers as template params) and one message per address the user has on the
  channel. Its dedup key `journey:<run>:<step>:<visit>` under the messages' unique constraint
  means a replayed advance never sends twice; delivery applies quiet hours, caps, preferences.
- `AudienceChange`, `SetAttributes` → memberships (cause `rule`) and the user's attributes.
- `CallWebhook` → a `journey_webhook_calls` row (insert-ignore on (run, step, visit)) and the
  `call_journey_webhook` job, deferred to after the commit.
- `Wake`, `Exit`, `Converted` → the run's `wake_at`, status, reason and end time.

`journey_step_log` gets a row for every step a run arrives at and, when it leaves, the edge it
took: `next`, `onTimeout`, `default`, `branches[<i>]`, `variants[<i>]`, or `exited` /
`converted` where the run ended. The machine returns only the final state; the path is the
steps whose visit count went up, ordered along the journey's edges from where the run stood.

Locking: whoever advances a run holds its user's row lock (the event processor and the
webhook job lock the user; the sweeper claims runs with SKIP LOCKED, then skip-locks their
users and leaves the rest for the next sweep). A paused (or archived) journey's runs are not
advanced; its exit and goal events still end them, since that sends nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import bulk_insert, bulk_update_pg, defer, ids_in
from app.models import Event, Project, User
from app.models.journey import (
    LIVE_RUN_STATUSES,
    Journey,
    JourneyRun,
    JourneyStepLog,
    JourneyVersion,
    JourneyWebhookCall,
)
from app.models.message import Message, Send
from journeys.filters import (
    AllOf,
    AudienceCondition,
    Condition,
    EventFact,
    UserFacts,
    evaluate,
    walk,
)
from journeys.journey import (
    TERMINAL,
    CallWebhook,
    Effect,
    IncomingEvent,
    JourneySpec,
    PreviousRuns,
    RunFacts,
    RunState,
    WebhookResult,
    advance,
    entry_key,
    listened_events,
    may_enter,
    parse_journey,
    run_from_json,
    run_to_json,
    start,
    trigger_matches,
)
from journeys.journey import on_event as machine_on_event
from journeys.journey.entry import ALREADY_ACTIVE, ALREADY_ACTIVE_KEY
from journeys.rules import MAX_DEPTH
from journeys.steps import Audience, Branch, WaitForSegment, Webhook
from journeys.steps import Send as SendStep
from journeys.steps import SetAttributes as SetAttributesStep
from journeys.steps.base import ENTRY, SAVED
from journeys.steps.effects import AudienceChange, SetAttributes
from journeys.steps.effects import Send as SendEffect

if TYPE_CHECKING:
    from app.services.audiences import MembershipBatch

log = logging.getLogger(__name__)

WEBHOOK_ACTOR = "call_journey_webhook"
# Membership changes a journey's audience step makes are logged with this cause. The
# audience services leave no internal audience event for it: `_caused` leaves its own, one
# chain level deeper.
AUDIENCE_CAUSE = "journey"
# How long the per-project set of listened event names is trusted (other processes' edits).
LISTENING_SECONDS = 2.0
# Users per transaction when entering a whole audience or segment at activation.
ENTER_BATCH = 500
# A claimed run the machine left unchanged although due (it should not happen) is looked at
# again after this, so it cannot spin in every sweep.
STUCK_RETRY = timedelta(seconds=60)
# Message statuses ranked for a branch on `lastSend`: the furthest one of the step's messages.
_SEND_RANK = {
    "clicked": 7,
    "opened": 6,
    "delivered": 5,
    "sent": 4,
    "failed": 3,
    "sending": 2,
    "queued": 1,
}
NOT_ACTIVE = "journey is {status}"


@dataclass
class EnterResult:
    """What an entry attempt did: the run (None when not entered) and why not."""

    run: JourneyRun | None
    entered: bool
    reason: str | None


# --- specs and what they need ---------------------------------------------------------------


@dataclass(frozen=True)
class _SpecInfo:
    """What the runtime needs to know about one journey version, computed once."""

    spec: JourneySpec
    cond: Condition | None  # all the filters the journey evaluates, None if it has none
    listened: frozenset[str]
    last_send: bool  # a branch reads `lastSend`
    webhooks: frozenset[str]  # ids of webhook steps
    # Its steps write to the user or read more than the profile row (sends, attributes,
    # audiences, filters): the sweep loads the user's ORM object for it.
    needs_profile: bool
    # A leftSegment exit or a waitForSegment step: its runs are advanced when the user's
    # data changes, not only when they are due.
    watches_segment: bool = False


_specs: dict[tuple[str, int, int], _SpecInfo] = {}
_specs_lock = threading.Lock()


def _info(session: Session, journey_id: int, version: int) -> _SpecInfo:
    key = (str(session.get_bind().engine.url), journey_id, version)
    found = _specs.get(key)
    if found is not None:
        return found
    definition = session.scalar(
        select(JourneyVersion.definition).where(
            JourneyVersion.journey_id == journey_id, JourneyVersion.version == version
        )
    )
    if definition is None:
        # A journey saved without its version row (should not happen): its current definition.
        definition = session.scalar(
            select(Journey.definition).where(Journey.id == journey_id, Journey.version == version)
        )
    if definition is None:
        raise LookupError(f"journey {journey_id} has no version {version}")
    spec = parse_journey(definition)
    conditions: list[Condition] = [c for step in spec.steps for c in step.conditions()]
    conditions += [r.left_segment for r in spec.exits if r.left_segment is not None]
    info = _SpecInfo(
        spec=spec,
        cond=AllOf(tuple(conditions)) if conditions else None,
        listened=frozenset(listened_events(spec)),
        last_send=any(
            case.last_send is not None
            for step in spec.steps
            if isinstance(step, Branch)
            for case in step.branches
        ),
        webhooks=frozenset(step.id for step in spec.steps if isinstance(step, Webhook)),
        needs_profile=bool(conditions)
        or any(isinstance(step, SendStep | SetAttributesStep | Audience) for step in spec.steps),
        watches_segment=any(r.left_segment is not None for r in spec.exits)
        or any(isinstance(step, WaitForSegment) for step in spec.steps),
    )
    with _specs_lock:
        if len(_specs) > 4096:
            _specs.clear()
        _specs[key] = info
    return info


def load_spec(session: Session, journey_id: int, version: int) -> JourneySpec:
    """The journey's definition of that version, parsed (cached per process: versions are
    immutable)."""
    return _info(session, journey_id, version).spec


_listening: dict[tuple[str, int], tuple[float, frozenset[str], frozenset[str], SegmentWatch]] = {}
# Per project, the ids of the active journeys each event name triggers (cached with _listening).
_triggered_by: dict[tuple[str, int], dict[str, tuple[int, ...]]] = {}


def _listening_sets(session: Session, project_id: int) -> tuple[frozenset[str], frozenset[str]]:
    """(event names that move runs of the project's live journeys, trigger event names)."""
    hit = _refresh(session, project_id)
    return hit[1], hit[2]


def _refresh(
    session: Session, project_id: int
) -> tuple[float, frozenset[str], frozenset[str], SegmentWatch]:
    """What the project's live journeys listen for, from one read of them and their versions
    every LISTENING_SECONDS: the event names that move runs, the trigger event names (with the
    journeys each triggers, `_triggered_by`) and the segments watched (`segment_watch`)."""
    key = (str(session.get_bind().engine.url), project_id)
    hit = _listening.get(key)
    clock = time.monotonic()
    if hit is not None and hit[0] > clock and key in _triggered_by:
        return hit
    journeys = session.execute(
        select(
            Journey.id, Journey.version, Journey.status, Journey.trigger_kind, Journey.trigger_key
        )
        .where(Journey.project_id == project_id, Journey.status.in_(("active", "paused")))
        .order_by(Journey.id)
    ).all()
    triggers = frozenset(
        j.trigger_key
        for j in journeys
        if j.status == "active" and j.trigger_kind == "event" and j.trigger_key
    )
    moving: set[str] = set()
    entries: list[tuple[int, Condition]] = []
    watching_runs = False
    if journeys:
        active = {j.id for j in journeys if j.status == "active"}
        for j in journeys:
            if j.id in active and j.trigger_kind == "segmentEntered":
                trigger = _info(session, j.id, j.version).spec.trigger
                if trigger and trigger.segment is not None:
                    entries.append((j.id, trigger.segment))
        # Every version: runs in flight keep the version they entered with.
        versions = session.execute(
            select(JourneyVersion.journey_id, JourneyVersion.version).where(
                ids_in(session, JourneyVersion.journey_id, [j.id for j in journeys])
            )
        ).all()
        for journey_id, version in versions:
            info = _info(session, journey_id, version)
            moving |= info.listened
            watching_runs = watching_runs or (journey_id in active and info.watches_segment)
    by_event: dict[str, list[int]] = {}
    for j in journeys:
        if j.status == "active" and j.trigger_kind == "event" and j.trigger_key:
            by_event.setdefault(j.trigger_key, []).append(j.id)
    _triggered_by[key] = {name: tuple(ids) for name, ids in by_event.items()}
    watch = SegmentWatch(tuple(entries), watching_runs) if entries or watching_runs else _NO_WATCH
    fresh = (clock + LISTENING_SECONDS, frozenset(moving), triggers, watch)
    _listening[key] = fresh
    return fresh


def listening(session: Session, project_id: int) -> frozenset[str]:
    """Event names some active or paused journey of the project listens for or is triggered
    by (refreshed every LISTENING_SECONDS): any other event needs no journey work at all."""
    moving, triggers = _listening_sets(session, project_id)
    return moving | triggers


def forget(project_id: int | None = None) -> None:
    """Drop the cached listened event names (of one project, or all: parsed versions too):
    an activation, pause or edit in this process counts at once, not within
    LISTENING_SECONDS."""
    for cache in (_listening, _triggered_by):
        for key in list(cache):
            if project_id is None or key[1] == project_id:
                cache.pop(key, None)
    # Parsed versions too: they are immutable once a journey ran, but a deleted journey's id
    # can come back on SQLite (and a draft's version 1 is edited in place). Cheap to reparse.
    with _specs_lock:
        _specs.clear()


# --- the advance engine ---------------------------------------------------------------------


@dataclass
class _Run:
    """A run row as the engine works on it (the ORM object, or a row the sweeper claimed)."""

    id: int
    project_id: int
    journey_id: int
    version: int
    user_id: int
    entry_key: str
    status: str
    step: str | None
    wake_at: datetime | None
    state: dict[str, Any]
    exit_reason: str | None = None
    ended_at: datetime | None = None
    changed: bool = False
    log_exists: bool = True  # the row of the current step is written (False right at entry)

    @classmethod
    def of(cls, run: JourneyRun) -> _Run:
        return cls(
            id=run.id,
            project_id=run.project_id,
            journey_id=run.journey_id,
            version=run.version,
            user_id=run.user_id,
            entry_key=run.entry_key,
            status=run.status,
            step=run.step,
            wake_at=run.wake_at,
            state=run.state,
            exit_reason=run.exit_reason,
            ended_at=run.ended_at,
        )


def _edge_label(step: Any, target: str, timed_out: bool) -> str:
    fields = [name for name, to in step.edge_fields() if to == target]
    if not fields:
        return "next"
    if timed_out and "onTimeout" in fields:
        return "onTimeout"
    return fields[0].removesuffix(".next")


def _path(spec: JourneySpec, old: RunState, new: RunState) -> list[tuple[str, int]] | None:
    """The (step, visit) the run went through in one advance, from where it stood."""
    if old.step is None:
        return []
    arrived = {s: v for s, v in new.visits.items() if v > old.visits.get(s, 0)}
    budget = [20_000]

    def walk_from(current: str, remaining: frozenset[str]) -> list[str] | None:
        if not remaining:
            return []
        budget[0] -= 1
        step = spec.step(current)
        if step is None or budget[0] < 0:
            return None
        for target in dict.fromkeys(step.edges()):
            if target in remaining:
                rest = walk_from(target, remaining - {target})
                if rest is not None:
                    return [target, *rest]
        return None

    tail = walk_from(old.step, frozenset(arrived))
    if tail is None:
        return None
    return [(old.step, old.visits.get(old.step, 1)), *[(s, arrived[s]) for s in tail]]


def _send_status(statuses: Iterable[str]) -> str | None:
    best = None
    for status in statuses:
        if best is None or _SEND_RANK.get(status, 0) > _SEND_RANK.get(best, 0):
            best = status
    return best


def _template_params(state: RunState) -> dict[str, Any]:
    entry = dict(state.context.get(ENTRY) or {})
    saved = dict(state.context.get(SAVED) or {})
    return {**entry, **saved, "entry": entry}


class _Engine:
    """Advances runs in one transaction; sends, step-log rows and webhook calls are written
    together by `flush` (a few statements for a whole sweep batch)."""

    def __init__(self, session: Session, members: MembershipBatch | None = None) -> None:
        self.session = session
        # The event processor's batch of membership changes, when called from it.
        self.members = members
        self.pg = session.get_bind().dialect.name == "postgresql"
        self._projects: dict[int, Project] = {}
        self._templates: dict[tuple[int, str], int | None] = {}
        self._zones: dict[int, str] = {}
        self.log_rows: list[dict[str, Any]] = []
        self.log_closes: list[dict[str, Any]] = []
        self.sends: list[tuple[dict[str, Any], User]] = []
        self.calls: list[dict[str, Any]] = []

    def project(self, project_id: int) -> Project:
        if project_id not in self._projects:
            project = self.session.get(Project, project_id)
            assert project is not None
            self._projects[project_id] = project
        return self._projects[project_id]

    def zone(self, project_id: int) -> str:
        """The project's fallback zone for local-time waits (as campaigns find it)."""
        if project_id not in self._zones:
            from workers.campaign_schedule import project_zone

            self._zones[project_id] = project_zone(self.project(project_id))
        return self._zones[project_id]

    # -- facts --

    def user_facts(self, info: _SpecInfo, user: User, now: datetime) -> UserFacts:
        from app.services.user_facts import load_facts, profile_facts

        if info.cond is None:
            return profile_facts(user, now)

        if self.members is not None:
            self.members.flush()  # the facts read memberships
        # Only the event names the journey's filters count, reachability only if one tests it.
        return load_facts(self.session, user, now, info.cond)

    def last_send_statuses(self, runs: Sequence[tuple[_Run, RunState]]) -> dict[int, str | None]:
        """Per run id, the furthest status of the messages of its latest send step."""
        wanted = {
            run.id: f"journey:{run.id}:{state.last_send[0]}:{state.last_send[1]}"
            for run, state in runs
            if state.last_send is not None
        }
        if not wanted:
            return {}
        rows = self.session.execute(
            select(Send.journey_run_id, Send.dedup_key, Message.status)
            .join(Message, Message.send_id == Send.id)
            .where(ids_in(self.session, Send.journey_run_id, list(wanted)))
        ).all()
        found: dict[int, list[str]] = {}
        for run_id, key, status in rows:
            if wanted.get(run_id) == key:
                found.setdefault(run_id, []).append(status)
        return {run_id: _send_status(found.get(run_id, ())) for run_id in wanted}

    def webhook_results(self, runs: Sequence[tuple[_Run, RunState]]) -> dict[int, WebhookResult]:
        """Recorded answers of the calls runs parked at a webhook step are waiting for."""
        waiting = {run.id: state for run, state in runs if state.step is not None}
        if not waiting:
            return {}
        rows = self.session.execute(
            select(
                JourneyWebhookCall.run_id,
                JourneyWebhookCall.step,
                JourneyWebhookCall.visit,
                JourneyWebhookCall.result,
            ).where(
                ids_in(self.session, JourneyWebhookCall.run_id, list(waiting)),
                JourneyWebhookCall.status.in_(("done", "failed")),
            )
        ).all()
        out: dict[int, WebhookResult] = {}
        for run_id, step, visit, result in rows:
            state = waiting[run_id]
            if state.step == step and state.visits.get(step) == visit and result is not None:
                out[run_id] = webhook_result_of(step, visit, result)
        return out

    # -- advancing --

    def advance(
        self,
        run: _Run,
        info: _SpecInfo,
        user: User,
        now: datetime,
        *,
        event: IncomingEvent | None = None,
        webhook_result: WebhookResult | None = None,
        last_send_status: str | None = None,
        only_exits: bool = False,
        state: RunState | None = None,
    ) -> list[Effect]:
        """Advance one run and apply its effects (sends, calls, log rows: at `flush`)."""
        old = state or run_from_json(run.state)
        if old.terminal:
            return []
        if only_exits:
            assert event is not None
            new, effects = machine_on_event(old, info.spec, event, now)
        else:
            facts = RunFacts(
                user=self.user_facts(info, user, now),
                timezone=self.zone(run.project_id),
                event=event,
                webhook_result=webhook_result,
                last_send_status=last_send_status,
                journey_id=str(run.journey_id),
                run_key=f"{run.user_id}:{run.entry_key}",
            )
            new, effects = advance(old, info.spec, facts, now)
        if new is old and run.log_exists:
            if run.wake_at is not None and run.wake_at <= now and event is None:
                log.warning("journey run %s was due but did not move; retried later", run.id)
                run.wake_at = now + STUCK_RETRY
                run.changed = True
            return []
        for effect in effects:
            self._apply(run, new, user, effect, now)
        self._log(run, info.spec, old, new, now, timed_out=event is None)
        run.state = run_to_json(new)
        run.status = new.status
        run.step = new.step
        run.wake_at = new.wake_at
        run.exit_reason = new.exit_reason
        if new.status in TERMINAL:
            run.ended_at = now
        run.changed = True
        return effects

    def _apply(self, run: _Run, state: RunState, user: User, effect: Effect, now: datetime) -> None:
        session = self.session
        if isinstance(effect, SendEffect):
            self._plan_send(run, state, user, effect, now)
        elif isinstance(effect, AudienceChange):
            from app.services.audiences import add_members, remove_members

            audience_id = int(effect.audience)
            adding = effect.action == "add"
            if self.members is not None:
                if adding:
                    moved = self.members.add(
                        project_id=run.project_id,
                        audience_id=audience_id,
                        user_pk=user.id,
                        ttl_seconds=effect.ttl_seconds,
                        now=now,
                        cause=AUDIENCE_CAUSE,
                    )
                else:
                    moved = self.members.remove(
                        project_id=run.project_id,
                        audience_id=audience_id,
                        user_pk=user.id,
                        now=now,
                        cause=AUDIENCE_CAUSE,
                    )
            elif adding:
                moved = add_members(
                    session,
                    project_id=run.project_id,
                    audience_id=audience_id,
                    user_pks=[user.id],
                    cause=AUDIENCE_CAUSE,
                    ttl_seconds=effect.ttl_seconds,
                    now=now,
                ).get(user.id, False)
            else:
                moved = user.id in remove_members(
                    session,
                    project_id=run.project_id,
                    audience_id=audience_id,
                    user_pks=[user.id],
                    cause=AUDIENCE_CAUSE,
                    now=now,
                )
            if moved:
                self._caused(run, user, now, audience=(audience_id, adding))
        elif isinstance(effect, SetAttributes):
            from app.services.profiles import merge_attributes

            before = dict(user.attributes or {})
            merged = merge_attributes(before, dict(effect.attributes))
            if merged != before:
                user.attributes = merged  # a new dict: JSON columns do not track in place
                user.updated_at = now
                self._caused(run, user, now, attributes=before)
        elif isinstance(effect, CallWebhook):
            body = effect.body
            if body is None:
                body = {
                    "journeyId": run.journey_id,
                    "runId": run.id,
                    "step": effect.step,
                    "visit": effect.visit,
                    "userId": user.external_id,
                    "entry": dict(state.context.get(ENTRY) or {}),
                }
            self.calls.append(
                {
                    "project_id": run.project_id,
                    "run_id": run.id,
                    "step": effect.step,
                    "visit": effect.visit,
                    "url": effect.url,
                    "body": body,
                    "status": "pending",
                    "result": None,
                    "attempts": 0,
                    "created_at": now,
                    "done_at": None,
                }
            )
        # Wake, Exit, Converted: the new state carries them (saved by `advance`).

    def _caused(
        self,
        run: _Run,
        user: User,
        now: datetime,
        *,
        attributes: Mapping[str, Any] | None = None,
        audience: tuple[int, bool] | None = None,
    ) -> None:
        """A step changed the user's attributes (`attributes`: before) or moved them into or
        out of an audience: the reactions a rule's action would have (attributeChanged and
        audience rules, audienceEntered and segment journeys), through internal events in the
        user's event order, one chain level deeper (past the bound: none, logged)."""
        from app.services.rules import note_attribute_changes, note_audience_changes

        session = self.session
        depth = caused_depth(session)
        if depth is None:
            log.warning("journey run %s: chain depth reached, its change fires nothing", run.id)
            return
        if self.members is not None:
            self.members.flush()  # what the internal events' readers see
        if attributes is not None:
            note_attribute_changes(session, user=user, before=attributes, now=now, depth=depth)
        if audience is not None:
            note_audience_changes(
                session,
                project_id=run.project_id,
                audience_id=audience[0],
                user_pks=[user.id],
                entered=audience[1],
                cause="journey",
                now=now,
                depth=depth,
            )
        note_profile_change(
            session, user=user, now=now, attributes_before=attributes, audience=audience
        )

    def _template_id(self, project_id: int, ref: int | str) -> int | None:
        if isinstance(ref, int):
            return ref
        key = (project_id, ref)
        if key not in self._templates:
            from app.errors import NotFound
            from app.services.templates import get_template

            try:
                self._templates[key] = get_template(self.session, project_id=project_id, ref=ref).id
            except NotFound:
                self._templates[key] = None
        return self._templates[key]

    def _plan_send(
        self, run: _Run, state: RunState, user: User, effect: SendEffect, now: datetime
    ) -> None:
        from app.services.messages import send_values

        template_id = self._template_id(run.project_id, effect.template)
        if template_id is None:
            log.warning("journey run %s: template %r not found", run.id, effect.template)
            return
        values = send_values(
            self.project(run.project_id),
            kind="journey",
            channels=[effect.channel],
            content=_template_params(state),
            ttl_seconds=None,
            transactional=False,
            template_id=template_id,
            now=now,
        )
        values.update(
            journey_run_id=run.id,
            journey_step=effect.step,
            dedup_key=f"journey:{run.id}:{effect.step}:{effect.visit}",
        )
        self.sends.append((values, user))

    def _log(
        self,
        run: _Run,
        spec: JourneySpec,
        old: RunState,
        new: RunState,
        now: datetime,
        *,
        timed_out: bool,
    ) -> None:
        path = _path(spec, old, new)
        if path is None:
            log.warning("journey run %s: could not retrace its path; logging the end only", run.id)
            path = [(old.step, old.visits.get(old.step, 1))] if old.step else []
            if new.step is not None and new.step != old.step:
                path.append((new.step, new.visits.get(new.step, 1)))
        if not path:
            return
        outcomes: list[str | None] = []
        for index, (step_id, _) in enumerate(path):
            if index + 1 < len(path):
                step = spec.step(step_id)
                target = path[index + 1][0]
                first_timed_out = timed_out and index == 0 and old.status == "waiting"
                outcomes.append(
                    _edge_label(step, target, first_timed_out) if step is not None else "next"
                )
            elif new.status in TERMINAL:
                outcomes.append(new.status)
            else:
                outcomes.append(None)
        for index, ((step_id, visit), outcome) in enumerate(zip(path, outcomes, strict=True)):
            left = now if outcome is not None else None
            if index == 0 and run.log_exists:
                if outcome is not None:
                    self.log_closes.append(
                        {
                            "run_id": run.id,
                            "step": step_id,
                            "visit": visit,
                            "outcome": outcome,
                            "left_at": left,
                        }
                    )
                continue
            self.log_rows.append(
                {
                    "project_id": run.project_id,
                    "journey_id": run.journey_id,
                    "run_id": run.id,
                    "user_id": run.user_id,
                    "version": run.version,
                    "step": step_id,
                    "visit": visit,
                    "outcome": outcome,
                    "entered_at": now,
                    "left_at": left,
                }
            )
        run.log_exists = True

    # -- writing --

    def flush(self) -> None:
        """Write the planned sends and messages, webhook calls and step-log changes."""
        session = self.session
        if self.sends:
            self._flush_sends()
        if self.calls:
            calls, self.calls = self.calls, []
            made = bulk_insert(
                session,
                JourneyWebhookCall,
                calls,
                conflict=["run_id", "step", "visit"],
                returning=("id",),
            )
            for (call_id,) in made:
                defer(session, WEBHOOK_ACTOR, int(call_id))
        if self.log_rows:
            rows, self.log_rows = self.log_rows, []
            bulk_insert(session, JourneyStepLog, rows, conflict=["run_id", "step", "visit"])
        if self.log_closes:
            closes, self.log_closes = self.log_closes, []
            if self.pg:  # one statement for the batch
                bulk_update_pg(
                    session,
                    JourneyStepLog,
                    closes,
                    keys=("run_id", "step", "visit"),
                    where="t.outcome IS NULL",
                )
                return
            table: Any = JourneyStepLog.__table__
            session.execute(
                update(table)
                .where(
                    table.c.run_id == bindparam("b_run_id"),
                    table.c.step == bindparam("b_step"),
                    table.c.visit == bindparam("b_visit"),
                    table.c.outcome.is_(None),
                )
                .values(outcome=bindparam("b_outcome"), left_at=bindparam("b_left_at")),
                [{f"b_{k}": v for k, v in row.items()} for row in closes],
            )

    def _flush_sends(self) -> None:
        from app.services.outbox import insert_messages, message_row
        from workers.channels import CHANNELS

        session = self.session
        planned, self.sends = self.sends, []
        # A replayed advance finds its send already there: reuse it (its messages dedupe).
        keys = [values["dedup_key"] for values, _ in planned]
        existing: dict[str, int] = {
            key: send_id
            for key, send_id in session.execute(
                select(Send.dedup_key, Send.id).where(
                    ids_in(session, Send.journey_run_id, {v["journey_run_id"] for v, _ in planned}),
                    Send.dedup_key.in_(keys),
                )
            )
            if key is not None
        }
        fresh = [values for values, _ in planned if values["dedup_key"] not in existing]
        seen: set[str] = set()
        unique = []
        for values in fresh:
            if values["dedup_key"] not in seen:
                seen.add(values["dedup_key"])
                unique.append(values)
        for send_id, key in bulk_insert(session, Send, unique, returning=("id", "dedup_key")):
            existing[key] = send_id
        channels = sorted({c for values, _ in planned for c in values["channels"]})
        users = list({user.id: user for _, user in planned}.values())
        addresses = {c: CHANNELS[c].addresses_of(session, users) for c in channels}
        rows: list[dict[str, Any]] = []
        for values, user in planned:
            send = Send(**values, id=existing[values["dedup_key"]])  # transient: for its columns
            for channel in values["channels"]:
                for address in addresses[channel].get(user.id) or ():
                    rows.append(
                        message_row(
                            send,
                            channel=channel,
                            address=address,
                            user_id=user.id,
                            now=values["created_at"],
                        )
                    )
        made = insert_messages(session, rows, with_send=True)
        counts: dict[int, int] = {}
        for _, send_id in made:
            counts[send_id] = counts.get(send_id, 0) + 1
        if counts:
            table: Any = Send.__table__
            session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(recipients=table.c.recipients + bindparam("b_n")),
                [{"b_id": send_id, "b_n": n} for send_id, n in counts.items()],
            )


def webhook_result_of(step: str, visit: int, result: Mapping[str, Any]) -> WebhookResult:
    """A stored call result (`{ok, status, body, error}`) as the machine's WebhookResult."""
    status = result.get("status")
    return WebhookResult(
        step=step,
        visit=visit,
        ok=bool(result.get("ok")),
        status=int(status) if isinstance(status, int) else None,
        body=result.get("body"),
        error=result.get("error"),
    )


def _write_back(run: JourneyRun, row: _Run, now: datetime) -> None:
    if not row.changed:
        return
    run.state = row.state
    run.status = row.status
    run.step = row.step
    run.wake_at = row.wake_at
    run.exit_reason = row.exit_reason
    run.ended_at = row.ended_at
    run.updated_at = now


def _advance_one(
    session: Session,
    run: JourneyRun,
    *,
    now: datetime,
    event: IncomingEvent | None = None,
    webhook_result: WebhookResult | None = None,
    only_exits: bool = False,
    log_exists: bool = True,
    user: User | None = None,
    members: MembershipBatch | None = None,
) -> list[Effect]:
    engine = _Engine(session, members)
    info = _info(session, run.journey_id, run.version)
    if user is None or user.id != run.user_id:
        user = session.get(User, run.user_id)
    assert user is not None
    row = _Run.of(run)
    row.log_exists = log_exists
    state = run_from_json(row.state)
    status = None
    if not only_exits:
        if info.last_send:
            status = engine.last_send_statuses([(row, state)]).get(row.id)
        if webhook_result is None and state.step in info.webhooks:
            webhook_result = engine.webhook_results([(row, state)]).get(row.id)
    effects = engine.advance(
        row,
        info,
        user,
        now,
        event=event,
        webhook_result=webhook_result,
        last_send_status=status,
        only_exits=only_exits,
        state=state,
    )
    engine.flush()
    _write_back(run, row, now)
    session.flush()
    return effects


def advance_run(
    session: Session,
    run: JourneyRun,
    *,
    now: datetime,
    event: IncomingEvent | None = None,
    webhook_result: WebhookResult | None = None,
) -> list[Effect]:
    """Advance one run now (the caller holds its user's lock) and apply what it decided; the
    effects. Replaying the same advance changes nothing and sends nothing twice."""
    return _advance_one(session, run, now=now, event=event, webhook_result=webhook_result)


# --- entering -------------------------------------------------------------------------------


def _previous(session: Session, journey_id: int, user_id: int, key: str) -> PreviousRuns:
    row = session.execute(
        select(
            func.count(case((JourneyRun.status.in_(LIVE_RUN_STATUSES), 1))),
            func.count(),
            func.max(JourneyRun.entered_at),
        ).where(
            JourneyRun.journey_id == journey_id,
            JourneyRun.user_id == user_id,
            JourneyRun.entry_key == key,
        )
    ).one()
    return PreviousRuns(active=int(row[0] or 0), entered=int(row[1] or 0), last_entered_at=row[2])


def enter(
    session: Session,
    *,
    journey: Journey,
    user: User,
    params: dict[str, Any] | None,
    event: Event | None,
    now: datetime,
    members: MembershipBatch | None = None,
) -> EnterResult:
    """Enter the user into the journey (entry policy, one live run per key) and run it to its
    first wait in this transaction. The run starts when its entry event was received."""
    if journey.status != "active":
        return EnterResult(None, False, NOT_ACTIVE.format(status=journey.status))
    info = _info(session, journey.id, journey.version)
    spec = info.spec
    properties = dict(params if params is not None else (event.properties if event else {}) or {})
    key = entry_key(spec.entry, properties)
    at = min(event.received_at, now) if event is not None else now
    if key is None:
        return EnterResult(None, False, may_enter(spec.entry, None, PreviousRuns(), at)[1])
    # `always` reads no history: the partial unique index below keeps one live run per key.
    if spec.entry.policy == "always":
        previous = PreviousRuns()
    else:
        previous = _previous(session, journey.id, user.id, key)
    ok, reason = may_enter(spec.entry, key, previous, at)
    if not ok:
        return EnterResult(None, False, reason)
    state = start(spec, properties, at)
    run = JourneyRun(
        project_id=journey.project_id,
        journey_id=journey.id,
        version=journey.version,
        user_id=user.id,
        entry_key=key,
        status=state.status,
        step=state.step,
        wake_at=None,
        state=run_to_json(state),
        exit_reason=state.exit_reason,
        entered_at=at,
        updated_at=now,
        ended_at=at if state.terminal else None,
    )
    try:
        # The partial unique index makes a concurrent second entry of the same key fail here.
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        taken = (
            ALREADY_ACTIVE
            if spec.entry.key is None
            else ALREADY_ACTIVE_KEY.format(key=spec.entry.key, value=key)
        )
        return EnterResult(None, False, taken)
    if state.terminal:
        return EnterResult(run, True, None)
    _advance_one(session, run, now=at, log_exists=False, user=user, members=members)
    return EnterResult(run, True, None)


def _trigger_journeys(session: Session, project_id: int, kind: str, key: str) -> list[Journey]:
    return list(
        session.scalars(
            select(Journey)
            .where(
                Journey.project_id == project_id,
                Journey.status == "active",
                Journey.trigger_kind == kind,
                Journey.trigger_key == key,
            )
            .order_by(Journey.id)
        )
    )


def _incoming(event: Event) -> IncomingEvent:
    return IncomingEvent(name=event.name, at=event.received_at, properties=event.properties or {})


def on_event(
    session: Session,
    *,
    project: Project,
    user: User,
    event: Event,
    now: datetime,
    members: MembershipBatch | None = None,
) -> None:
    """A user's event (the processor holds the user's lock): advance the user's live runs
    that listen for it, then enter the journeys it triggers. `members`: the processor's
    membership batch, so journey audience steps and its rules share one view."""
    moving, triggers = _listening_sets(session, project.id)
    if event.name not in moving and event.name not in triggers:
        return
    incoming = _incoming(event)
    if event.name in moving:
        runs = list(
            session.scalars(
                select(JourneyRun)
                .where(
                    JourneyRun.user_id == user.id,
                    JourneyRun.status.in_(LIVE_RUN_STATUSES),
                )
                .order_by(JourneyRun.id)
            )
        )
        statuses: dict[int, str] = {}
        if runs:
            statuses = {
                journey_id: status
                for journey_id, status in session.execute(
                    select(Journey.id, Journey.status).where(
                        ids_in(session, Journey.id, {r.journey_id for r in runs})
                    )
                )
            }
        for run in runs:
            status = statuses.get(run.journey_id)
            if status not in ("active", "paused"):
                continue
            if event.name not in _info(session, run.journey_id, run.version).listened:
                continue
            _advance_one(
                session,
                run,
                now=now,
                event=incoming,
                only_exits=status == "paused",
                user=user,
                members=members,
            )
    if event.name in triggers:
        # The cached ids, then the session's identity map: a query per event cost ~1.5 ms
        # (a job's journeys are as fresh as its session, within LISTENING_SECONDS).
        key = (str(session.get_bind().engine.url), project.id)
        for journey_id in _triggered_by.get(key, {}).get(event.name, ()):
            journey = session.get(Journey, journey_id)
            if journey is None or journey.status != "active":
                continue
            spec = load_spec(session, journey.id, journey.version)
            if trigger_matches(spec, incoming):
                enter(
                    session,
                    journey=journey,
                    user=user,
                    params=dict(event.properties or {}),
                    event=event,
                    now=now,
                    members=members,
                )


def on_audience_entered(
    session: Session,
    *,
    project: Project,
    user: User,
    audience_id: int,
    now: datetime,
    members: MembershipBatch | None = None,
) -> None:
    """The user joined an audience: enter the active journeys it triggers (`members`: the
    event processor's membership batch, as for `on_event`)."""
    for journey in _trigger_journeys(session, project.id, "audienceEntered", str(audience_id)):
        enter(
            session,
            journey=journey,
            user=user,
            params=None,
            event=None,
            now=now,
            members=members,
        )


def enter_existing_members(session: Session, journey: Journey, now: datetime) -> int:
    """At activation with `entry.existingMembers`: enter the trigger audience's current
    members (or the users matching the trigger segment), in batches; how many entered."""
    spec = load_spec(session, journey.id, journey.version)
    trigger = spec.trigger
    if trigger is None or not spec.entry.existing_members:
        return 0
    if trigger.kind == "audienceEntered":
        from app.models import AudienceMember
        from app.services.audiences import is_current

        audience_id = int(journey.trigger_key or trigger.audience or 0)
        clause: Any = User.id.in_(
            select(AudienceMember.user_id).where(
                AudienceMember.audience_id == audience_id, is_current(now)
            )
        )
    elif trigger.kind == "segmentEntered" and trigger.segment is not None:
        from app.services.segments import members_clause

        clause = members_clause(
            trigger.segment,
            project_id=journey.project_id,
            dialect_name=session.get_bind().dialect.name,
            now=now,
        )
    else:
        return 0
    entered = 0
    after = 0
    while True:
        stmt = (
            select(User)
            .where(User.project_id == journey.project_id, User.id > after, clause)
            .order_by(User.id)
            .limit(ENTER_BATCH)
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=User)
        users = list(session.scalars(stmt))
        if not users:
            return entered
        for user in users:
            result = enter(session, journey=journey, user=user, params=None, event=None, now=now)
            entered += result.entered
        after = users[-1].id


# --- segments: entered on data changes, runs that watch one ---------------------------------

# The internal event a change to a user's data leaves when it was made outside the processing
# of that user's own event (a profile upsert or identify, a journey's setAttributes or audience
# step) and some active journey watches segments. Properties: `entered`, the segmentEntered
# journeys whose segment the user entered by the change (matched after it, not before, both
# judged where the change was made, so each change is counted once), and the chain `depth`.
# The event processor then enters them and advances the runs that watch a segment, in the
# user's event order.
SEGMENTS_CHANGED = "segments.changed"
# session.info key: (depth, bound) of the event the processor is handling in this session.
_DEPTH = "journeys_chain_depth"


@dataclass(frozen=True)
class SegmentWatch:
    """What the project's active journeys watch of a user's segments."""

    entries: tuple[tuple[int, Condition], ...] = ()  # (journey id, segment): segmentEntered
    runs: bool = False  # some active journey's runs exit on leaving a segment or wait for one

    @property
    def active(self) -> bool:
        """Whether a change to a user's data concerns any journey at all."""
        return bool(self.entries) or self.runs

    @property
    def cond(self) -> Condition | None:
        """The entry segments together (what to load facts for), None without any."""
        return AllOf(tuple(c for _, c in self.entries)) if self.entries else None

    def entered(self, before: UserFacts | Sequence[UserFacts], after: UserFacts) -> list[int]:
        """The journeys whose segment the user matches `after` and did not `before` (with
        several, as none of them: the two profiles a merge made one)."""
        befores = (before,) if isinstance(before, UserFacts) else tuple(before)
        return [
            j
            for j, c in self.entries
            if evaluate(c, after) and not any(evaluate(c, b) for b in befores)
        ]

    def watches_audience(self, audience_id: int, name: str | None) -> bool:
        """Whether a membership change of this audience may concern a journey: an entry
        segment names it, or some runs watch a segment (any: they are judged on the run)."""
        if self.runs:
            return True
        labels = {str(audience_id), name}
        return any(
            isinstance(node, AudienceCondition) and node.audience in labels
            for _, cond in self.entries
            for node in walk(cond)
        )

    def facts(self, session: Session, user: User, now: datetime) -> UserFacts | None:
        """The user's facts the entry segments read (None without any), as they are now."""
        if self.cond is None:
            return None
        from app.services.user_facts import load_facts

        if user.id is None:
            session.flush()
        return load_facts(session, user, now, self.cond)


_NO_WATCH = SegmentWatch()


def segment_watch(session: Session, project_id: int) -> SegmentWatch:
    """The project's segment triggers, and whether runs of its active journeys watch segments
    (read with `listening`): with neither, a data change costs nothing more."""
    return _refresh(session, project_id)[3]


def set_chain_depth(session: Session, depth: int | None, bound: int = MAX_DEPTH) -> None:
    """The event processor: the chain depth of the event it now handles (None: done), so
    the changes journeys make meanwhile leave events one level deeper."""
    if depth is None:
        session.info.pop(_DEPTH, None)
    else:
        session.info[_DEPTH] = (depth, bound)


def caused_depth(session: Session) -> int | None:
    """The depth of the internal events a change made now leaves (1 outside the processor),
    None past the bound: like a rule chain, a journey-to-rule-to-journey loop stops there."""
    depth, bound = session.info.get(_DEPTH, (0, MAX_DEPTH))
    return depth + 1 if depth + 1 < bound else None


def _move_undone(
    audiences: frozenset[str], audience_id: int, name: str | None, *, joined: bool
) -> frozenset[str]:
    """A user's audience labels (ids and names) as they were before a move into (`joined`)
    or out of this audience."""
    labels = {str(audience_id), *([name] if name else [])}
    return audiences - labels if joined else audiences | labels


def note_profile_change(
    session: Session,
    *,
    user: User,
    now: datetime,
    attributes_before: Mapping[str, Any] | None = None,
    fields_before: Mapping[str, Any] | None = None,
    audience: tuple[int, bool] | None = None,
    facts_before: Sequence[UserFacts] | None = None,
) -> None:
    """A change to the user's data (already applied to `user`) made outside the processing of
    their own event: a `segments.changed` event when some active journey watches segments
    (see SEGMENTS_CHANGED). `*_before`: what the change replaced; `audience`: (id, joined)
    of a membership it changed; `facts_before`: the user's facts before it, when the change
    is too wide to describe (a merge: both profiles' facts, see SegmentWatch.facts)."""
    watch = segment_watch(session, user.project_id)
    if not watch.active:
        return
    if user.id is None:
        session.flush()
    entered: list[int] = []
    after = watch.facts(session, user, now)
    if after is not None and facts_before is not None:
        entered = watch.entered(facts_before, after)
    elif after is not None:
        audiences = after.audiences
        if audience is not None:
            from app.models import Audience as AudienceRow

            name = session.scalar(select(AudienceRow.name).where(AudienceRow.id == audience[0]))
            audiences = _move_undone(audiences, audience[0], name, joined=audience[1])
        before = replace(
            after,
            attributes=after.attributes if attributes_before is None else attributes_before,
            audiences=audiences,
            **dict(fields_before or {}),
        )
        entered = watch.entered(before, after)
    if not entered and not watch.runs:
        return
    depth = caused_depth(session)
    if depth is None:
        log.warning("user %s: chain depth reached, a segment change starts nothing", user.id)
        return
    from app.services.rules import note_internal

    note_internal(
        session,
        project_id=user.project_id,
        user_pk=user.id,
        name=SEGMENTS_CHANGED,
        properties={"entered": entered, "depth": depth},
        now=now,
    )


def _enter_segment_journeys(
    session: Session,
    *,
    user: User,
    journey_ids: Sequence[int],
    now: datetime,
    members: MembershipBatch | None,
    facts: UserFacts | None = None,
) -> None:
    """Enter the still active segmentEntered journeys of `journey_ids` whose segment the user
    matches (`facts`, else loaded now)."""
    if not journey_ids:
        return
    journeys = list(
        session.scalars(
            select(Journey)
            .where(
                ids_in(session, Journey.id, sorted(set(journey_ids))),
                Journey.status == "active",
                Journey.trigger_kind == "segmentEntered",
            )
            .order_by(Journey.id)
        )
    )
    segments = []
    for journey in journeys:
        trigger = load_spec(session, journey.id, journey.version).trigger
        if trigger is not None and trigger.segment is not None:
            segments.append((journey, trigger.segment))
    if facts is None and segments:
        from app.services.user_facts import load_facts

        if members is not None:
            members.flush()
        facts = load_facts(session, user, now, AllOf(tuple(c for _, c in segments)))
    for journey, segment in segments:
        assert facts is not None
        if evaluate(segment, facts):
            enter(
                session,
                journey=journey,
                user=user,
                params=None,
                event=None,
                now=now,
                members=members,
            )


def _advance_watching(
    session: Session, *, user: User, now: datetime, members: MembershipBatch | None
) -> None:
    """Advance the user's live runs of active journeys that watch a segment (a leftSegment
    exit, a waitForSegment step): their user's data changed."""
    runs = session.scalars(
        select(JourneyRun)
        .join(Journey, Journey.id == JourneyRun.journey_id)
        .where(
            JourneyRun.user_id == user.id,
            JourneyRun.status.in_(LIVE_RUN_STATUSES),
            Journey.status == "active",
        )
        .order_by(JourneyRun.id)
    )
    for run in list(runs):
        if _info(session, run.journey_id, run.version).watches_segment:
            _advance_one(session, run, now=now, user=user, members=members)


def on_segments_changed(
    session: Session,
    *,
    user: User,
    event: Event,
    now: datetime,
    members: MembershipBatch | None = None,
) -> None:
    """The processor's part of a `segments.changed` event: enter the journeys it names (if
    the user still matches) and advance the runs that watch a segment."""
    props = event.properties or {}
    entered = [i for i in props.get("entered") or () if isinstance(i, int)]
    _enter_segment_journeys(session, user=user, journey_ids=entered, now=now, members=members)
    if segment_watch(session, user.project_id).runs:
        _advance_watching(session, user=user, now=now, members=members)


class DataChange:
    """What one event the processor handles changes of its user, as segments see it: the user
    before the event (their earlier events only), then the event itself and its rules'
    attribute and audience changes applied in memory. Journeys' own changes are not counted
    here: they leave `segments.changed` events of their own (`note_profile_change`)."""

    def __init__(
        self,
        session: Session,
        watch: SegmentWatch,
        user: User,
        event: Event,
        now: datetime,
        *,
        audience: tuple[int, str | None, bool] | None = None,
    ) -> None:
        from app.services.user_facts import load_facts

        self.watch = watch
        self.event = event
        self.before = (
            load_facts(session, user, now, watch.cond, events_before=event.id)
            if watch.cond is not None
            else None
        )
        self.attributes: dict[str, Any] = {}
        self.audiences: dict[str, bool] = {}
        if audience is not None:
            # The event records a membership change made outside (the API, an import, a
            # TTL's expiry): the user before it is the user now with that change undone.
            audience_id, name, joined = audience
            if self.before is not None:
                held = _move_undone(self.before.audiences, audience_id, name, joined=joined)
                self.before = replace(self.before, audiences=held)
            self.audience(audience_id, name, joined)

    def set_attributes(self, changes: Mapping[str, Any]) -> None:
        """A rule set these attributes (None: removed)."""
        self.attributes.update(changes)

    def audience(self, audience_id: int, name: str | None, joined: bool) -> None:
        """A rule moved the user into (`joined`) or out of an audience."""
        for label in (str(audience_id), name):
            if label is not None:
                self.audiences[label] = joined

    def after(self) -> UserFacts | None:
        """The user after the event and its rules' changes."""
        if self.before is None:
            return None
        attributes = dict(self.before.attributes)
        for key, value in self.attributes.items():
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        audiences = set(self.before.audiences)
        for label, joined in self.audiences.items():
            (audiences.add if joined else audiences.discard)(label)
        event = self.event
        fact = EventFact(
            name=event.name, timestamp=event.timestamp, properties=event.properties or {}
        )
        return replace(
            self.before,
            attributes=attributes,
            audiences=frozenset(audiences),
            events=(*self.before.events, fact),
        )

    def finish(
        self, session: Session, *, user: User, now: datetime, members: MembershipBatch | None
    ) -> None:
        """After the event's handling: enter the journeys whose segment the user entered by
        it, and advance the runs that watch a segment."""
        after = self.after()
        if self.before is not None and after is not None:
            entered = self.watch.entered(self.before, after)
            _enter_segment_journeys(
                session, user=user, journey_ids=entered, now=now, members=members, facts=after
            )
        if self.watch.runs:
            _advance_watching(session, user=user, now=now, members=members)


# --- the sweep ------------------------------------------------------------------------------

_RUN_COLUMNS = (
    JourneyRun.id,
    JourneyRun.project_id,
    JourneyRun.journey_id,
    JourneyRun.version,
    JourneyRun.user_id,
    JourneyRun.entry_key,
    JourneyRun.status,
    JourneyRun.step,
    JourneyRun.wake_at,
    JourneyRun.state,
    JourneyRun.exit_reason,
    JourneyRun.ended_at,
)


def _claim(session: Session, now: datetime, limit: int, pg: bool) -> list[_Run]:
    stmt = (
        select(*_RUN_COLUMNS)
        .join(Journey, Journey.id == JourneyRun.journey_id)
        .where(
            JourneyRun.wake_at <= now,
            JourneyRun.status.in_(LIVE_RUN_STATUSES),
            Journey.status == "active",
        )
        .order_by(JourneyRun.wake_at)
        .limit(limit)
    )
    if pg:
        stmt = stmt.with_for_update(of=JourneyRun.__table__, skip_locked=True)
    return [_Run(*row) for row in session.execute(stmt)]


_USER_COLUMNS = (
    User.id,
    User.project_id,
    User.external_id,
    User.email,
    User.phone,
    User.language,
    User.timezone,
    User.attributes,
    User.created_at,
    User.last_seen_at,
)


def _lock_users(
    session: Session, user_ids: list[int], pg: bool, profiles: set[int]
) -> dict[int, Any]:
    """Lock users in id order and load them; those another transaction holds are skipped
    (the caller holds run locks, so it never waits). Plain rows, as the facts read them,
    except the `profiles` ids: the runs' effects write to those (ORM objects)."""
    stmt = select(*_USER_COLUMNS).where(ids_in(session, User.id, user_ids)).order_by(User.id)
    if pg:
        stmt = stmt.with_for_update(skip_locked=True)
    users: dict[int, Any] = {row.id: row for row in session.execute(stmt)}
    wanted = sorted(profiles & set(users))
    if wanted:
        loaded = session.scalars(
            select(User)
            .where(ids_in(session, User.id, wanted))
            .execution_options(populate_existing=True)
        )
        users.update((user.id, user) for user in loaded)
    return users


def _save_runs(session: Session, runs: list[_Run], now: datetime, pg: bool) -> None:
    changed = [r for r in runs if r.changed]
    if not changed:
        return
    rows = [
        {
            "id": r.id,
            "status": r.status,
            "step": r.step,
            "wake_at": r.wake_at,
            "state": r.state,
            "exit_reason": r.exit_reason,
            "ended_at": r.ended_at,
        }
        for r in changed
    ]
    if pg:  # one statement for the batch
        bulk_update_pg(session, JourneyRun, [{**row, "updated_at": now} for row in rows])
        return
    table: Any = JourneyRun.__table__
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            step=bindparam("b_step"),
            wake_at=bindparam("b_wake_at", type_=table.c.wake_at.type),
            state=bindparam("b_state", type_=table.c.state.type),
            exit_reason=bindparam("b_exit_reason"),
            ended_at=bindparam("b_ended_at", type_=table.c.ended_at.type),
            updated_at=now,
        ),
        [{f"b_{k}": v for k, v in row.items()} for row in rows],
    )


def advance_due(session: Session, now: datetime, *, limit: int = 1000) -> int:
    """The sweep's body: claim up to `limit` due runs of active journeys (wake order, SKIP
    LOCKED on PostgreSQL), skip-lock their users, advance them, commit; how many advanced."""
    pg = session.get_bind().dialect.name == "postgresql"
    runs = _claim(session, now, limit, pg)
    if not runs:
        session.commit()
        return 0
    infos = {(r.journey_id, r.version): _info(session, r.journey_id, r.version) for r in runs}
    profiles = {r.user_id for r in runs if infos[(r.journey_id, r.version)].needs_profile}
    users = _lock_users(session, sorted({r.user_id for r in runs}), pg, profiles)
    runs = [r for r in runs if r.user_id in users]  # the others: the next sweep
    engine = _Engine(session)
    states = [(run, run_from_json(run.state)) for run in runs]
    needs_status = [(r, s) for r, s in states if infos[(r.journey_id, r.version)].last_send]
    send_statuses = engine.last_send_statuses(needs_status) if needs_status else {}
    at_webhook = [(r, s) for r, s in states if s.step in infos[(r.journey_id, r.version)].webhooks]
    answers = engine.webhook_results(at_webhook) if at_webhook else {}
    for run, state in states:
        try:
            engine.advance(
                run,
                infos[(run.journey_id, run.version)],
                users[run.user_id],
                now,
                webhook_result=answers.get(run.id),
                last_send_status=send_statuses.get(run.id),
                state=state,
            )
        except Exception:
            # The machine never raises; a failing write does. The batch is undone and this
            # run set aside for a while, so one broken run cannot hold back the others.
            log.exception("journey run %s could not be advanced", run.id)
            session.rollback()
            session.execute(
                update(JourneyRun).where(JourneyRun.id == run.id).values(wake_at=now + STUCK_RETRY)
            )
            session.commit()
            return 0
    engine.flush()
    _save_runs(session, runs, now, pg)
    session.commit()
    return len(runs)
