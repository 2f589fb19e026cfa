"""The journey machine: a run's state, the facts it is advanced with, and `advance`.

Pure: no I/O, no clock (the caller passes `now`), no randomness. `advance` runs the run's
steps from where it stands until it parks at a waiting step or ends, and returns the new state
with the effects the worker applies. Rules it keeps:

- Exited and converted runs are terminal: advancing one returns it unchanged, no effects.
- A parked run advanced before its wake time, with no fact that moves it, is returned as is;
  a due wait always moves on, on the right edge (`next` when the event or segment came in
  time, `onTimeout` when the timeout passed).
- At most MAX_STEPS_PER_ADVANCE steps run per advance, and no step is arrived at twice in one
  advance (a loop whose waits all resolved at once); either ends the run with a reason, as a
  missing next step or a step that fails does. `advance` never raises for a broken journey.
- Every arrival at a step counts a visit; effects that leave the building carry (step, visit),
  so advancing the same state again yields the same keys, and advancing the resulting state
  with the same facts changes nothing: events count only when received after the wait began,
  a webhook answer only for the (step, visit) that asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from journeys.durations import parse_duration
from journeys.filters import UserFacts, evaluate
from journeys.journey.definition import MAX_STEPS_PER_ADVANCE, JourneySpec
from journeys.journey.entry import entry_key
from journeys.steps import End, Go, IncomingEvent, Park, StepInput, WebhookResult
from journeys.steps.base import ENTRY, MISSING, event_matches
from journeys.steps.effects import (
    AudienceChange,
    Converted,
    Effect,
    Exit,
    Send,
    SetAttributes,
    Wake,
)
from journeys.steps.wait_for_event import properties_pair

# Stored strings (journey_runs.status): never rename.
RUN_STATUSES = ("active", "waiting", "exited", "converted")
TERMINAL = frozenset({"exited", "converted"})

NO_STEPS = "the journey has no steps"
NO_STEP = 'step "{step}" is no step of this journey'
BAD_NEXT = 'step "{step}": next "{target}" is no step'
LOOPED = 'step "{step}" reached twice in one advance (a loop that did not wait)'
STOPPED = "stopped after {limit} steps in one advance"
FAILED = 'step "{step}" failed: {error}'
EXIT_EVENT = 'exit event "{event}"'
LEFT_SEGMENT = "left the segment of exit[{index}]"
GOAL = 'goal "{event}"'


@dataclass(frozen=True, kw_only=True)
class RunState:
    """One run of one user through one journey version, as the worker stores it."""

    status: str  # active | waiting | exited | converted
    step: str | None  # the current step; None once ended
    entered_at: datetime
    wake_at: datetime | None = None
    waiting_since: datetime | None = None  # when the run arrived at its current step
    visits: Mapping[str, int] = field(default_factory=dict)  # arrivals per step id
    context: Mapping[str, Any] = field(default_factory=dict)  # {"entry": ..., "saved": ...}
    entry_key: str = ""
    exit_reason: str | None = None
    last_send: tuple[str, int] | None = None  # (step, visit) of the latest send

    @property
    def terminal(self) -> bool:
        """Whether the run has ended."""
        return self.status in TERMINAL


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """What the worker loaded for one advance. Data only."""

    # The user as filters see them (profile, attributes, audiences, reachable channels and the
    # events of `required_event_names(journey)`).
    user: UserFacts
    # The zone for local-time waits when the user's own is unset or unknown (the project's).
    timezone: str = "UTC"
    # An event of the user arriving now (may resume a waitForEvent, exit, or convert).
    event: IncomingEvent | None = None
    # The recorded answer of the webhook call of the run's current (step, visit), if any.
    webhook_result: WebhookResult | None = None
    # The furthest status of the message of `run.last_send` (queued, sent, ... failed).
    last_send_status: str | None = None
    # Seeds of the split buckets: the journey's id and a run key (user id + entry key).
    journey_id: str = ""
    run_key: str = ""


def start(journey: JourneySpec, entry: Mapping[str, Any] | None, now: datetime) -> RunState:
    """A new run at the journey's first step (`advance` then runs it). `entry` is the entry
    event's properties or the API params; the entry policy has been checked (`may_enter`)."""
    properties = dict(entry or {})
    key = entry_key(journey.entry, properties) or ""
    first = journey.first
    if first is None:
        return RunState(
            status="exited",
            step=None,
            entered_at=now,
            context={ENTRY: properties},
            entry_key=key,
            exit_reason=NO_STEPS,
        )
    return RunState(
        status="active",
        step=first,
        entered_at=now,
        waiting_since=now,
        visits={first: 1},
        context={ENTRY: properties},
        entry_key=key,
    )


def _end(run: RunState, status: str, reason: str) -> RunState:
    return replace(
        run, status=status, step=None, wake_at=None, waiting_since=None, exit_reason=reason
    )


def _entry_pairs(run: RunState, name: str, event: IncomingEvent) -> bool:
    entry = run.context.get(ENTRY)
    value = entry.get(name, MISSING) if isinstance(entry, Mapping) else MISSING
    return properties_pair(name, MISSING if value is None else value, event)


def on_event(
    run: RunState, journey: JourneySpec, event: IncomingEvent, now: datetime
) -> tuple[RunState, list[Effect]]:
    """Apply the journey's goal and exit events to a run (waits are `advance`'s business).

    Only events received after the run entered count. The goal converts (terminal); with an
    entry key, a goal event carrying that property converts only the run of that key value.
    An exit event, with `matchOn` paired with the entry event's property, exits the run.
    """
    if run.terminal or event.at <= run.entered_at:
        return run, []
    goal = journey.goal
    if goal is not None and event.name == goal.event and event_matches(goal.where, event):
        in_time = goal.within is None or event.at <= run.entered_at + parse_duration(goal.within)
        key = journey.entry.key
        same_key = key is None or event.properties.get(key) is None or _entry_pairs(run, key, event)
        if in_time and same_key:
            reason = GOAL.format(event=event.name)
            return _end(run, "converted", reason), [Converted(event.name)]
    for rule in journey.exits:
        if rule.event != event.name or not event_matches(rule.where, event):
            continue
        if rule.match_on is not None and not _entry_pairs(run, rule.match_on, event):
            continue
        reason = EXIT_EVENT.format(event=event.name)
        return _end(run, "exited", reason), [Exit(reason)]
    return run, []


def _apply_to_user(user: UserFacts, effect: Effect) -> UserFacts:
    """What the rest of this advance should see of an effect the worker will apply."""
    if isinstance(effect, SetAttributes):
        attributes = dict(user.attributes)
        for key, value in effect.attributes.items():
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        return replace(user, attributes=attributes)
    if isinstance(effect, AudienceChange):
        name = str(effect.audience)
        audiences = user.audiences | {name} if effect.action == "add" else user.audiences - {name}
        return replace(user, audiences=frozenset(audiences))
    return user


def _left_segment(journey: JourneySpec, user: UserFacts) -> str | None:
    """The reason of the first leftSegment exit whose filter the user no longer matches."""
    for index, rule in enumerate(journey.exits):
        if rule.left_segment is not None and not evaluate(rule.left_segment, user):
            return LEFT_SEGMENT.format(index=index)
    return None


def advance(
    run: RunState, journey: JourneySpec, facts: RunFacts, now: datetime
) -> tuple[RunState, list[Effect]]:
    """Run the run from where it stands until it parks or ends; the new state and effects."""
    if run.terminal:
        return run, []
    if facts.event is not None:
        moved, ending = on_event(run, journey, facts.event, now)
        if moved.terminal:
            return moved, ending
    user = replace(facts.user, now=now)
    loaded = user
    left = _left_segment(journey, user)
    if left is not None:
        return _end(run, "exited", left), [Exit(left)]
    resumed = run.status == "waiting"
    step_id = run.step
    since = run.waiting_since or now
    visits = dict(run.visits)
    context = run.context
    last_send = run.last_send
    arrived = set() if resumed else {step_id}
    effects: list[Effect] = []

    def ended(reason: str) -> tuple[RunState, list[Effect]]:
        final = replace(run, visits=visits, context=context, last_send=last_send)
        return _end(final, "exited", reason), [*effects, Exit(reason)]

    for executed in range(MAX_STEPS_PER_ADVANCE + 1):
        step = journey.step(step_id)
        if step is None or step_id is None:
            return ended(NO_STEP.format(step=step_id))
        if executed == MAX_STEPS_PER_ADVANCE:
            return ended(STOPPED.format(limit=MAX_STEPS_PER_ADVANCE))
        view = StepInput(
            step=step_id,
            visit=visits.get(step_id, 1),
            now=now,
            since=since,
            resumed=resumed,
            wake_at=run.wake_at if resumed else None,
            user=user,
            context=context,
            timezone=facts.timezone,
            event=facts.event,
            webhook_result=facts.webhook_result,
            # A send made in this advance has no status yet.
            last_send_status=facts.last_send_status if last_send == run.last_send else None,
            journey_id=facts.journey_id,
            run_key=facts.run_key,
        )
        try:
            outcome = step.advance(view)
        except Exception as error:  # a broken step ends this run, never the worker
            return ended(FAILED.format(step=step_id, error=f"{type(error).__name__}: {error}"))
        for effect in outcome.effects:
            effects.append(effect)
            user = _apply_to_user(user, effect)
            if isinstance(effect, Send):
                last_send = (effect.step, effect.visit)
        if isinstance(outcome, End):
            return ended(outcome.reason)
        if isinstance(outcome, Park):
            # This advance's own attribute and audience changes may have taken the user out.
            left = _left_segment(journey, user) if user is not loaded else None
            if left is not None:
                return ended(left)
            unchanged = (
                resumed
                and step_id == run.step
                and outcome.wake_at == run.wake_at
                and not effects
                and context is run.context
            )
            if unchanged:
                return run, []
            if outcome.wake_at is not None and (not resumed or outcome.wake_at != run.wake_at):
                effects.append(Wake(outcome.wake_at))
            parked = replace(
                run,
                status="waiting",
                step=step_id,
                wake_at=outcome.wake_at,
                waiting_since=since,
                visits=visits,
                context=context,
                last_send=last_send,
            )
            return parked, effects
        assert isinstance(outcome, Go)
        if outcome.context is not None:
            context = outcome.context
        target = outcome.next
        if journey.step(target) is None:
            return ended(BAD_NEXT.format(step=step_id, target=target))
        if target in arrived:
            return ended(LOOPED.format(step=target))
        arrived.add(target)
        visits[target] = visits.get(target, 0) + 1
        step_id, since, resumed = target, now, False
    raise AssertionError("unreachable")  # pragma: no cover


# --- stored form -------------------------------------------------------------------------


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse_time(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def run_to_json(run: RunState) -> dict[str, Any]:
    """The run as JSON (for a state column); `run_from_json` reads it back equal."""
    return {
        "status": run.status,
        "step": run.step,
        "enteredAt": _time(run.entered_at),
        "wakeAt": _time(run.wake_at),
        "waitingSince": _time(run.waiting_since),
        "visits": dict(run.visits),
        "context": dict(run.context),
        "entryKey": run.entry_key,
        "exitReason": run.exit_reason,
        "lastSend": list(run.last_send) if run.last_send is not None else None,
    }


def run_from_json(data: Mapping[str, Any]) -> RunState:
    """A run from `run_to_json`'s form."""
    entered_at = _parse_time(data["enteredAt"])
    assert entered_at is not None
    last_send = data.get("lastSend")
    return RunState(
        status=data["status"],
        step=data.get("step"),
        entered_at=entered_at,
        wake_at=_parse_time(data.get("wakeAt")),
        waiting_since=_parse_time(data.get("waitingSince")),
        visits=dict(data.get("visits") or {}),
        context=dict(data.get("context") or {}),
        entry_key=data.get("entryKey") or "",
        exit_reason=data.get("exitReason"),
        last_send=(str(last_send[0]), int(last_send[1])) if last_send else None,
    )
