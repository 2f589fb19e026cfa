"""The journey machine: terminal runs, broken journeys, loops, exits, goals and entry policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.filters import UserFacts
from journeys.journey import (
    MAX_STEPS_PER_ADVANCE,
    Converted,
    EntryPolicy,
    Exit,
    IncomingEvent,
    JourneySpec,
    PreviousRuns,
    RunFacts,
    Send,
    advance,
    entry_key,
    may_enter,
    on_event,
    parse_journey,
    run_from_json,
    run_to_json,
    start,
    trigger_matches,
)
from journeys.steps import Send as SendStep
from journeys.steps import Step

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
EXIT = {"id": "done", "type": "exit"}


def facts(now=NOW, **kwargs):
    user = kwargs.pop("user", None) or UserFacts(now=now)
    return RunFacts(user=user, **kwargs)


def event(name, at, **properties):
    return IncomingEvent(name=name, at=at, properties=properties)


def waiting_journey(**top):
    return parse_journey(
        {
            "name": "J",
            "trigger": {"event": "add_to_cart"},
            "steps": [
                {"id": "w", "type": "wait", "duration": "1d", "next": "m"},
                {"id": "m", "type": "send", "channel": "push", "template": 1, "next": "done"},
                EXIT,
            ],
            **top,
        }
    )


def parked(spec, entry=None, now=NOW):
    return advance(start(spec, entry, now), spec, facts(now), now)[0]


def test_a_terminal_run_never_changes():
    spec = waiting_journey()
    run = parked(spec)
    later = NOW + timedelta(days=2)
    done, effects = advance(run, spec, facts(later), later)
    assert done.status == "exited" and effects == [
        Send("push", 1, "m", 1),
        Exit('exit step "done"'),
    ]
    for when in (later, later + timedelta(days=30)):
        assert advance(done, spec, facts(when, event=event("x", when)), when) == (done, [])
        assert on_event(done, spec, event("x", when), when) == (done, [])


def test_a_parked_run_before_its_wake_is_returned_as_is():
    spec = waiting_journey()
    run = parked(spec)
    for seconds in (0, 1, 86_399):
        when = NOW + timedelta(seconds=seconds)
        moved, effects = advance(run, spec, facts(when, event=event("other", when)), when)
        assert moved is run and effects == []


def test_a_missing_next_step_exits_with_a_reason_and_never_raises():
    broken = JourneySpec(
        name="x", steps=(SendStep(id="s", channel="push", template=1, next="gone"),)
    )
    run, effects = advance(start(broken, None, NOW), broken, facts(), NOW)
    assert run.status == "exited" and run.exit_reason == 'step "s": next "gone" is no step'
    assert effects == [Send("push", 1, "s", 1), Exit(run.exit_reason)]


def test_a_run_at_a_step_the_journey_lost_exits():
    spec = waiting_journey()
    run = parked(spec)
    edited = parse_journey(
        {
            "name": "J",
            "trigger": {"event": "add_to_cart"},
            "steps": [{"id": "other", "type": "exit"}],
        }
    )
    later = NOW + timedelta(days=1)
    done, effects = advance(run, edited, facts(later), later)
    assert done.exit_reason == 'step "w" is no step of this journey' and effects == [
        Exit(done.exit_reason)
    ]


@dataclass(frozen=True, kw_only=True)
class Exploding(Step):
    type_name = "exploding"

    def advance(self, run):
        raise KeyError("boom")


def test_a_step_that_fails_exits_the_run():
    spec = JourneySpec(name="x", steps=(Exploding(id="e"),))
    run, effects = advance(start(spec, None, NOW), spec, facts(), NOW)
    assert run.exit_reason == "step \"e\" failed: KeyError: 'boom'" and effects == [
        Exit(run.exit_reason)
    ]


def test_a_loop_whose_wait_resolves_at_once_runs_once_then_exits():
    spec = parse_journey(
        {
            "name": "J",
            "trigger": {"event": "e"},
            "steps": [
                {"id": "w", "type": "wait", "untilAttribute": {"key": "due"}, "next": "m"},
                {"id": "m", "type": "send", "channel": "push", "template": 1, "next": "w"},
            ],
        }
    )
    past = UserFacts(now=NOW, attributes={"due": "2020-01-01"})
    run, effects = advance(start(spec, None, NOW), spec, facts(user=past), NOW)
    assert effects == [Send("push", 1, "m", 1), Exit(run.exit_reason)]
    assert run.exit_reason == 'step "w" reached twice in one advance (a loop that did not wait)'


def test_a_loop_through_a_real_wait_sends_once_per_turn_with_new_visits():
    spec = parse_journey(
        {
            "name": "Weekly",
            "trigger": {"api": True},
            "steps": [
                {"id": "w", "type": "wait", "duration": "1w", "next": "m"},
                {"id": "m", "type": "send", "channel": "email", "template": 2, "next": "w"},
            ],
        }
    )
    run = parked(spec)
    keys = []
    for week in range(1, 5):
        when = NOW + timedelta(weeks=week)
        run, effects = advance(run, spec, facts(when), when)
        keys += [(e.step, e.visit) for e in effects if isinstance(e, Send)]
        assert run.status == "waiting" and run.wake_at == when + timedelta(weeks=1)
    assert keys == [("m", 1), ("m", 2), ("m", 3), ("m", 4)] and run.visits["w"] == 5


def test_the_step_cap_ends_a_run():
    chain = [SendStep(id=f"s{i}", channel="push", template=1, next=f"s{i + 1}") for i in range(120)]
    spec = JourneySpec(name="long", steps=tuple(chain))
    run, effects = advance(start(spec, None, NOW), spec, facts(), NOW)
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == MAX_STEPS_PER_ADVANCE
    assert run.exit_reason == f"stopped after {MAX_STEPS_PER_ADVANCE} steps in one advance"


def test_start_without_steps_is_an_ended_run():
    run = start(JourneySpec(name="empty"), {"a": 1}, NOW)
    assert run.status == "exited" and run.exit_reason == "the journey has no steps"


# --- exits and goals -----------------------------------------------------------------------------


def test_exit_events_pair_on_match_on():
    spec = waiting_journey(
        entry={"key": "cartId", "policy": "always"},
        exit=[{"event": "cart_emptied", "matchOn": "cartId"}],
    )
    cart_a = parked(spec, {"cartId": "A"})
    at = NOW + timedelta(minutes=5)
    assert on_event(cart_a, spec, event("cart_emptied", at, cartId="B"), at) == (cart_a, [])
    assert on_event(cart_a, spec, event("cart_emptied", at), at) == (cart_a, [])
    done, effects = advance(
        cart_a, spec, facts(at, event=event("cart_emptied", at, cartId="A")), at
    )
    assert done.status == "exited" and done.exit_reason == 'exit event "cart_emptied"'
    assert effects == [Exit('exit event "cart_emptied"')]


def test_goal_converts_within_its_window_and_per_key():
    spec = waiting_journey(
        entry={"key": "cartId", "policy": "always"},
        goal={"event": "purchase", "where": "paid:true", "within": "1d"},
    )
    cart_a, cart_b = parked(spec, {"cartId": "A"}), parked(spec, {"cartId": "B"})
    at = NOW + timedelta(hours=1)
    paid_a = event("purchase", at, cartId="A", paid=True)
    won, effects = advance(cart_a, spec, facts(at, event=paid_a), at)
    assert won.status == "converted" and won.step is None and effects == [Converted("purchase")]
    assert won.exit_reason == 'goal "purchase"'
    assert on_event(cart_b, spec, paid_a, at) == (cart_b, [])  # another cart's purchase
    unpaid = event("purchase", at, cartId="B", paid=False)
    assert on_event(cart_b, spec, unpaid, at) == (cart_b, [])
    keyless = event("purchase", at, paid=True)  # no cartId: converts any run of the user
    assert on_event(cart_b, spec, keyless, at)[0].status == "converted"
    late = NOW + timedelta(days=1, seconds=1)
    assert on_event(cart_b, spec, event("purchase", late, cartId="B", paid=True), late) == (
        cart_b,
        [],
    )


def test_events_from_before_the_entry_do_not_count():
    spec = waiting_journey(exit=[{"event": "add_to_cart"}])
    run = parked(spec)
    assert on_event(run, spec, event("add_to_cart", NOW), NOW) == (run, [])
    later = NOW + timedelta(seconds=1)
    assert on_event(run, spec, event("add_to_cart", later), later)[0].status == "exited"


def test_leaving_a_segment_exits():
    spec = waiting_journey(exit=[{"leftSegment": "plan:trial"}])
    trial = UserFacts(now=NOW, attributes={"plan": "trial"})
    run = advance(start(spec, None, NOW), spec, facts(user=trial), NOW)[0]
    at = NOW + timedelta(hours=1)
    assert advance(run, spec, facts(at, user=trial), at) == (run, [])
    paid = UserFacts(now=NOW, attributes={"plan": "pro"})
    done, effects = advance(run, spec, facts(at, user=paid), at)
    assert done.exit_reason == "left the segment of exit[0]" and effects == [Exit(done.exit_reason)]


# --- entry ---------------------------------------------------------------------------------------


def test_entry_keys():
    keyed = EntryPolicy(key="orderId")
    assert entry_key(EntryPolicy(), {"orderId": 1}) == ""
    assert entry_key(keyed, {"orderId": 10.0}) == "10" == entry_key(keyed, {"orderId": "10"})
    assert entry_key(keyed, {"orderId": True}) == "true"
    for missing in ({}, {"orderId": None}, {"orderId": [1]}, {"orderId": ""}, None):
        assert entry_key(keyed, missing) is None
    assert start(waiting_journey(entry={"key": "orderId"}), {"orderId": 5}, NOW).entry_key == "5"


def test_may_enter_by_policy():
    once, always = EntryPolicy("once"), EntryPolicy("always")
    per_day = EntryPolicy("oncePer", period="1d")
    nothing = PreviousRuns()
    ended = PreviousRuns(active=0, entered=1, last_entered_at=NOW - timedelta(hours=2))
    active = PreviousRuns(active=1, entered=1, last_entered_at=NOW)
    for policy in (once, always, per_day):
        assert may_enter(policy, "", nothing, NOW) == (True, "entered")
        assert may_enter(policy, "", active, NOW) == (False, "already in this journey")
    assert may_enter(once, "", ended, NOW) == (False, "entered before (entry policy once)")
    assert may_enter(always, "", ended, NOW) == (True, "entered")
    assert may_enter(per_day, "", ended, NOW) == (
        False,
        "entered within the last 1d (entry policy oncePer)",
    )
    assert may_enter(per_day, "", ended, NOW + timedelta(hours=22)) == (True, "entered")
    keyed = EntryPolicy("always", key="cartId")
    assert may_enter(keyed, None, nothing, NOW) == (
        False,
        'the entry has no "cartId" (the journey\'s entry key)',
    )
    assert may_enter(keyed, "A", active, NOW) == (False, 'already in this journey for cartId "A"')


@settings(max_examples=60, deadline=None)
@given(
    policy=st.sampled_from(["once", "always", "oncePer"]),
    actions=st.lists(
        st.tuples(
            st.sampled_from(["enter", "end"]),
            st.sampled_from(["A", "B", None]),
            st.integers(0, 7200),
        ),
        max_size=30,
    ),
)
def test_at_most_one_active_run_per_user_journey_and_key(policy, actions):
    entry = EntryPolicy(policy, period="1h" if policy == "oncePer" else None, key="cartId")
    runs: list[dict] = []  # the database the worker keeps: key, active, entered_at
    now = NOW
    for action, cart, seconds in actions:
        now += timedelta(seconds=seconds)
        key = entry_key(entry, {} if cart is None else {"cartId": cart})
        if action == "end":
            for run in runs:
                if run["key"] == key:
                    run["active"] = False
            continue
        same = [run for run in runs if run["key"] == key]
        previous = PreviousRuns(
            active=sum(run["active"] for run in same),
            entered=len(same),
            last_entered_at=max((run["at"] for run in same), default=None),
        )
        allowed, reason = may_enter(entry, key, previous, now)
        if allowed:
            runs.append({"key": key, "active": True, "at": now})
        else:
            assert reason != "entered"
        for value in ("A", "B"):
            assert sum(run["active"] for run in runs if run["key"] == value) <= 1
        assert all(run["key"] is not None for run in runs)
        if policy == "once":
            assert len([run for run in runs if run["key"] == key]) <= 1


def test_run_state_round_trips_through_json():
    spec = parse_journey(
        {
            "name": "J",
            "trigger": {"event": "e"},
            "entry": {"key": "k"},
            "steps": [
                {"id": "m", "type": "send", "channel": "sms", "template": 1, "next": "w"},
                {"id": "w", "type": "wait", "duration": "1h", "next": "done"},
                EXIT,
            ],
        }
    )
    run = advance(start(spec, {"k": "x", "n": [1, 2]}, NOW), spec, facts(), NOW)[0]
    data = run_to_json(run)
    assert data["lastSend"] == ["m", 1] and data["wakeAt"] == "2026-05-01T13:00:00+00:00"
    assert run_from_json(data) == run


def test_trigger_matches_name_and_where():
    spec = waiting_journey(trigger={"event": "add_to_cart", "where": "currency:EUR"})
    assert trigger_matches(spec, event("add_to_cart", NOW, currency="EUR"))
    assert not trigger_matches(spec, event("add_to_cart", NOW, currency="USD"))
    assert not trigger_matches(spec, event("purchase", NOW, currency="EUR"))
    api = waiting_journey(trigger={"api": True})
    assert not trigger_matches(api, event("add_to_cart", NOW))
