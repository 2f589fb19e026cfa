"""A Hypothesis state machine over generated journeys, events, data changes and time.

The world plays the worker: it advances the run after every change, applies the effects to its
copy of the user, and answers webhooks. Invariants after every advance: a terminal run never
changes, a run has exactly one current step until it ends, advancing the same state with the
same facts gives the same result, advancing the resulting state with the same facts changes
nothing, a due wait is left on the right edge, and every (step, visit) effect key of a run is
used once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from journeys.durations import parse_duration
from journeys.filters import UserFacts, evaluate
from journeys.journey import (
    RUN_STATUSES,
    AudienceChange,
    CallWebhook,
    IncomingEvent,
    RunFacts,
    Send,
    SetAttributes,
    WebhookResult,
    advance,
    parse_journey,
    start,
)
from journeys.steps import Wait, WaitForEvent, WaitForSegment, Webhook

NOW = datetime(2026, 3, 28, 22, tzinfo=UTC)
EXIT_RULE_REASONS = ("exit event", "left the segment", "goal")


@st.composite
def journeys(draw):
    """A valid journey of 2-7 steps and an exit step: a chain s0 → s1 → ... → end, plus
    forward edges from any step and backward edges only from waiting steps (so every loop
    passes through a wait, and every step is reachable along the chain)."""
    count = draw(st.integers(2, 7))
    ids = [f"s{i}" for i in range(count)] + ["end"]
    steps = []
    for index in range(count):
        following = ids[index + 1]
        forward = st.sampled_from(ids[index + 1 :])
        anywhere = st.sampled_from(ids)
        kind = draw(
            st.sampled_from(
                [
                    "wait",
                    "waitUntil",
                    "waitAttribute",
                    "waitForEvent",
                    "waitForSegment",
                    "branch",
                    "lastSend",
                    "split",
                    "send",
                    "audience",
                    "setAttributes",
                    "webhook",
                ]
            )
        )
        step = {"id": ids[index]}
        if kind == "wait":
            step |= {"type": "wait", "duration": draw(st.sampled_from(["10s", "30s", "2m"]))}
            step["next"] = following
        elif kind == "waitUntil":
            step |= {"type": "wait", "until": {"time": draw(st.sampled_from(["23:00", "02:30"]))}}
            step["next"] = following
        elif kind == "waitAttribute":
            step |= {"type": "wait", "untilAttribute": {"key": "due", "offset": "+5s"}}
            step["next"] = following
        elif kind in ("waitForEvent", "waitForSegment"):
            other = draw(anywhere)
            edges = draw(st.sampled_from([(following, other), (other, following)]))
            timeout = draw(st.sampled_from(["20s", "1m", "1h"]))
            step |= {"timeout": timeout, "next": edges[0], "onTimeout": edges[1]}
            if kind == "waitForEvent":
                step |= {"type": kind, "event": draw(st.sampled_from(["a", "b"]))}
                if draw(st.booleans()):
                    step["matchOn"] = "k"
            else:
                step |= {"type": kind, "filter": "plan:pro"}
        elif kind in ("branch", "lastSend"):
            test = "plan:pro" if kind == "branch" else {"lastSend": "opened"}
            step |= {
                "type": "branch",
                "branches": [{"if": test, "next": draw(forward)}],
                "default": following,
            }
        elif kind == "split":
            step |= {
                "type": "split",
                "variants": [
                    {"percent": 50, "next": following},
                    {"percent": 50, "next": draw(forward)},
                ],
            }
        elif kind == "send":
            step |= {"type": "send", "channel": "push", "template": 1, "next": following}
        elif kind == "audience":
            step |= {"type": "audience", "add": "VIP", "next": following}
        elif kind == "setAttributes":
            value = draw(st.sampled_from([{"plan": "pro"}, {"plan": "free"}, {"blocked": True}]))
            step |= {"type": "setAttributes", "attributes": value, "next": following}
        else:
            step |= {
                "type": "webhook",
                "url": "https://hooks.test/x",
                "saveAs": "r",
                "next": following,
            }
        steps.append(step)
    steps.append({"id": "end", "type": "exit"})
    body = {
        "name": "generated",
        "trigger": {"event": "start"},
        "entry": {"key": "k", "policy": "always"},
        "steps": steps,
    }
    if draw(st.booleans()):
        body["goal"] = {"event": "g"}
    exits = []
    if draw(st.booleans()):
        exits.append({"event": "x", "matchOn": "k"})
    if draw(st.booleans()):
        exits.append({"leftSegment": {"attr": "blocked", "op": "notExists"}})
    body["exit"] = exits
    return parse_journey(body)


class JourneyRun(RuleBasedStateMachine):
    """One run of one generated journey, driven by the world's changes."""

    @initialize(spec=journeys(), key=st.sampled_from([1, 2]))
    def enter(self, spec, key):
        self.spec = spec
        self.key = key
        self.now = NOW
        self.attributes = {"plan": "free"}
        self.audiences = frozenset()
        self.statuses = {}  # (step, visit) of a send -> its message's status
        self.calls = {}  # (step, visit) of a webhook call -> whether answered
        self.keys = set()
        self.run = start(spec, {"k": key}, NOW)
        self.advance_with()

    # --- the world ---------------------------------------------------------------------

    def facts(self, event=None, webhook_result=None):
        user = UserFacts(now=self.now, attributes=dict(self.attributes), audiences=self.audiences)
        return RunFacts(
            user=user,
            timezone="Europe/Paris",
            event=event,
            webhook_result=webhook_result,
            last_send_status=self.statuses.get(self.run.last_send),
            journey_id="7",
            run_key=f"u1:{self.key}",
        )

    def apply(self, effects):
        for effect in effects:
            if isinstance(effect, SetAttributes):
                for name, value in effect.attributes.items():
                    if value is None:
                        self.attributes.pop(name, None)
                    else:
                        self.attributes[name] = value
            elif isinstance(effect, AudienceChange):
                self.audiences = self.audiences | {str(effect.audience)}
            elif isinstance(effect, CallWebhook):
                self.calls[(effect.step, effect.visit)] = False

    def expected_edge(self, before, facts):
        """Where a parked run must go now: `(edge, True)`, `(None, False)` when it must stay
        put, or None when this model does not say (local-time and attribute waits)."""
        if before.status != "waiting":
            return None
        step = self.spec.step(before.step)
        since = before.waiting_since
        stay = (None, False)
        if isinstance(step, WaitForEvent):
            event = facts.event
            deadline = since + parse_duration(step.timeout)
            if (
                event is not None
                and event.name == step.event
                and since < event.at <= deadline
                and (step.match_on is None or event.properties.get("k") == self.key)
            ):
                return step.next, True
            return (step.on_timeout, True) if self.now >= deadline else stay
        if isinstance(step, WaitForSegment):
            if evaluate(step.filter, facts.user):
                return step.next, True
            deadline = since + parse_duration(step.timeout)
            return (step.on_timeout, True) if self.now >= deadline else stay
        if isinstance(step, Wait) and step.duration is not None:
            return (step.next, True) if self.now >= before.wake_at else stay
        if isinstance(step, Webhook):
            answer = facts.webhook_result
            if answer is not None and (answer.step, answer.visit) == (
                before.step,
                before.visits[before.step],
            ):
                return step.next, True
            return (step.next, True) if self.now >= before.wake_at else stay
        return None

    def advance_with(self, **kwargs):
        before = self.run
        facts = self.facts(**kwargs)
        after, effects = advance(before, self.spec, facts, self.now)
        # Deterministic: the same state and facts give the same result (a redelivered job).
        assert advance(before, self.spec, facts, self.now) == (after, effects)
        if before.terminal:
            assert after is before and effects == []
        # A due wait is left on its edge (unless an exit or the goal ended the run first).
        # A parked run not due, with no fact that moves it, stays exactly as it was.
        expected = self.expected_edge(before, facts)
        ended_by_rule = after.terminal and after.exit_reason.startswith(EXIT_RULE_REASONS)
        if expected is not None and not ended_by_rule:
            edge, moves = expected
            if moves:
                assert after.visits.get(edge, 0) == before.visits.get(edge, 0) + 1, (edge, after)
            else:
                assert after is before and effects == [], (before, after)
        for effect in effects:
            if isinstance(effect, Send | CallWebhook):
                key = (effect.step, effect.visit)
                assert key not in self.keys, key
                self.keys.add(key)
        self.apply(effects)
        self.run = after
        # Replaying the same event, answer and time on the result changes nothing.
        replayed = self.facts(**kwargs)
        assert advance(after, self.spec, replayed, self.now) == (after, [])

    # --- rules ---------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0, 1, 5, 10, 20, 30, 60, 3_600, 7 * 3_600, 86_400]))
    def time_passes(self, seconds):
        self.now += timedelta(seconds=seconds)
        self.advance_with()

    @precondition(lambda self: self.run.wake_at is not None)
    @rule(late=st.sampled_from([0, 0, 1, 90]))
    def sweeper_wakes_it(self, late):
        self.now = self.run.wake_at + timedelta(seconds=late)
        self.advance_with()

    @rule(
        name=st.sampled_from(["a", "b", "g", "x", "other"]),
        key=st.sampled_from([1, 2]),
        seconds=st.sampled_from([0, 1, 5]),
    )
    def event_arrives(self, name, key, seconds):
        self.now += timedelta(seconds=seconds)
        event = IncomingEvent(name=name, at=self.now, properties={"k": key})
        self.advance_with(event=event)

    @rule(plan=st.sampled_from(["pro", "free"]))
    def plan_changes(self, plan):
        self.attributes["plan"] = plan
        self.advance_with()

    @rule(offset=st.sampled_from([None, -60, 0, 30, 3_600]))
    def due_date_changes(self, offset):
        if offset is None:
            self.attributes.pop("due", None)
        else:
            moment = self.now + timedelta(seconds=offset)
            self.attributes["due"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.advance_with()

    @rule(blocked=st.booleans())
    def blocked_changes(self, blocked):
        if blocked:
            self.attributes["blocked"] = True
        else:
            self.attributes.pop("blocked", None)
        self.advance_with()

    @rule(status=st.sampled_from(["sent", "opened", "clicked", "failed"]))
    def message_status_changes(self, status):
        if self.run.last_send is not None:
            self.statuses[self.run.last_send] = status

    @precondition(lambda self: isinstance(self.spec.step(self.run.step), Webhook))
    @rule(ok=st.booleans(), tier=st.sampled_from(["gold", "silver"]), stale=st.booleans())
    def webhook_answers(self, ok, tier, stale):
        visit = self.run.visits[self.run.step] - (1 if stale else 0)
        result = WebhookResult(
            step=self.run.step, visit=visit, ok=ok, status=200 if ok else 500, body={"tier": tier}
        )
        self.advance_with(webhook_result=result)

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def one_current_step(self):
        run = self.run
        assert run.status in RUN_STATUSES and run.status != "active"
        if run.terminal:
            assert run.step is None and run.wake_at is None and run.exit_reason
        else:
            assert run.status == "waiting" and self.spec.step(run.step) is not None
            assert run.visits[run.step] >= 1 and run.waiting_since <= self.now
            # Nothing due is left waiting: the advance would have moved it.
            assert run.wake_at is None or run.wake_at > self.now


JourneyRun.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_journey_runs = JourneyRun.TestCase
