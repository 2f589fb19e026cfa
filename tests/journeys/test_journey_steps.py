"""Every journey step type: its validation (each error names the step) and its behaviour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from journeys.filters import UserFacts
from journeys.journey import (
    AudienceChange,
    CallWebhook,
    Exit,
    IncomingEvent,
    JourneyError,
    RunFacts,
    Send,
    SetAttributes,
    Wake,
    WebhookResult,
    advance,
    parse_journey,
    start,
    to_json,
)
from journeys.steps import STEP_TYPES, StepError
from journeys.steps.split import split_bucket

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
EXIT = {"id": "done", "type": "exit"}


def journey(*steps, **top):
    body = {"name": "J", "trigger": {"event": "signup"}, "steps": [*steps, EXIT], **top}
    return parse_journey(body)


def facts(now=NOW, **kwargs):
    user = kwargs.pop("user", None) or UserFacts(now=now)
    return RunFacts(user=user, **kwargs)


def run_at(spec, entry=None, now=NOW, **kwargs):
    """Start a run and advance it once."""
    return advance(start(spec, entry, now), spec, facts(now, **kwargs), now)


def step_errors(*steps, **top):
    with pytest.raises(JourneyError) as info:
        journey(*steps, **top)
    return info.value.errors


# --- validation ------------------------------------------------------------------------------


BAD_STEPS = [
    ({"id": "w", "type": "wait", "next": "done"}, "steps[0]", "exactly one of duration"),
    (
        {"id": "w", "type": "wait", "duration": "1h", "until": {"time": "10:00"}, "next": "done"},
        "steps[0]",
        "exactly one of",
    ),
    ({"id": "w", "type": "wait", "duration": "1y", "next": "done"}, "steps[0].duration", "1y"),
    ({"id": "w", "type": "wait", "duration": 0, "next": "done"}, "steps[0].duration", "seconds"),
    (
        {"id": "w", "type": "wait", "until": {"time": "25:00"}, "next": "done"},
        "steps[0].until.time",
        "HH:MM",
    ),
    (
        {"id": "w", "type": "wait", "until": {"time": "10:00", "weekdays": ["mon", "sunday"]}},
        "steps[0].until.weekdays",
        "weekdays",
    ),
    (
        {"id": "w", "type": "wait", "untilAttribute": {"key": "t", "offset": "-1y"}, "next": "x"},
        "steps[0].untilAttribute.offset",
        "offset",
    ),
    (
        {"id": "w", "type": "wait", "untilAttribute": {"offset": "1d"}, "next": "done"},
        "steps[0].untilAttribute.key",
        "key is required",
    ),
    (
        {"id": "w", "type": "waitForEvent", "event": "buy", "next": "done", "onTimeout": "done"},
        "steps[0].timeout",
        "timeout is required",
    ),
    (
        {
            "id": "w",
            "type": "waitForEvent",
            "event": "buy",
            "where": {"price": {"gt": 1}},
            "timeout": "1h",
            "next": "done",
            "onTimeout": "done",
        },
        "steps[0].where.price",
        "",
    ),
    (
        {
            "id": "w",
            "type": "waitForEvent",
            "event": "buy",
            "matchOn": "cart id",
            "timeout": "1h",
            "next": "done",
            "onTimeout": "done",
        },
        "steps[0].matchOn",
        "property name",
    ),
    (
        {"id": "w", "type": "waitForSegment", "filter": {"all": 3}, "timeout": "1h"},
        "steps[0].filter.all",
        "",
    ),
    (
        {"id": "b", "type": "branch", "branches": [], "default": "done"},
        "steps[0].branches",
        "non-empty",
    ),
    (
        {"id": "b", "type": "branch", "branches": [{"if": {"lastSend": "read"}, "next": "done"}]},
        "steps[0].branches[0].if.lastSend",
        "lastSend must be one of",
    ),
    (
        {"id": "b", "type": "branch", "branches": [{"if": "plan:", "next": "done"}]},
        "steps[0].branches[0].if[0].value",
        "empty value",
    ),
    (
        {"id": "b", "type": "branch", "branches": [{"if": "a:b"}] * 21, "default": "done"},
        "steps[0].branches",
        "at most 20",
    ),
    (
        {"id": "s", "type": "split", "variants": [{"percent": 100, "next": "done"}]},
        "steps[0].variants",
        "2-10",
    ),
    (
        {
            "id": "s",
            "type": "split",
            "variants": [{"percent": 50, "next": "done"}, {"percent": 40, "next": "done"}],
        },
        "steps[0].variants",
        "sum to 100, not 90",
    ),
    (
        {
            "id": "s",
            "type": "split",
            "variants": [{"percent": 50.5, "next": "done"}, {"percent": 49.5, "next": "done"}],
        },
        "steps[0].variants[0].percent",
        "whole number",
    ),
    (
        {"id": "m", "type": "send", "channel": "fax", "template": 1, "next": "done"},
        "steps[0].channel",
        "channel must be one of",
    ),
    (
        {"id": "m", "type": "send", "channel": "push", "template": 0, "next": "done"},
        "steps[0].template",
        "an id from 1",
    ),
    (
        {"id": "a", "type": "audience", "add": "VIP", "remove": "Old", "next": "done"},
        "steps[0]",
        "exactly one of add and remove",
    ),
    (
        {"id": "a", "type": "audience", "remove": "Old", "ttlSeconds": 60, "next": "done"},
        "steps[0].ttlSeconds",
        "add only",
    ),
    (
        {"id": "a", "type": "audience", "add": "VIP", "ttlSeconds": -1, "next": "done"},
        "steps[0].ttlSeconds",
        "whole seconds",
    ),
    (
        {"id": "t", "type": "setAttributes", "attributes": {}, "next": "done"},
        "steps[0].attributes",
        "non-empty",
    ),
    (
        {"id": "h", "type": "webhook", "url": "ftp://example.com/x", "next": "done"},
        "steps[0].url",
        "http(s)",
    ),
    (
        {"id": "h", "type": "webhook", "url": "https://x.test", "saveAs": "entry", "next": "done"},
        "steps[0].saveAs",
        "saveAs",
    ),
    (
        {"id": "h", "type": "webhook", "url": "https://x.test:99999/", "next": "done"},
        "steps[0].url",
        "not a valid URL",
    ),
    ({"id": "x", "type": "exit", "next": "done"}, "steps[0].next", "unknown field 'next'"),
    ({"id": "m", "type": "send", "channel": "push", "template": 1}, "steps[0].next", "required"),
    (
        {"id": "m", "type": "send", "channel": "push", "template": 1, "next": "no such"},
        "steps[0].next",
        "step id",
    ),
]


@pytest.mark.parametrize(("step", "path", "fragment"), BAD_STEPS)
def test_each_step_error_names_its_step(step, path, fragment):
    errors = step_errors(step)
    assert path in errors, errors
    assert all(reason.startswith(f'step "{step["id"]}": ') for reason in errors[path])
    assert any(fragment in reason for reason in errors[path])


def test_a_step_without_a_usable_id_is_named_by_position():
    errors = step_errors({"type": "send", "channel": "push", "template": 1, "next": "done"})
    assert errors["steps[0].id"] == ["step at steps[0]: id is required"]
    errors = step_errors({"id": "a b", "type": "nope"})
    assert errors["steps[0].type"][0].startswith("step at steps[0]: type must be one of wait,")


def test_step_classes_validate_alone_and_round_trip():
    for name, cls in STEP_TYPES.items():
        assert cls.type_name == name
    raw = {"id": "w", "type": "wait", "until": {"time": "09:30", "weekdays": ["fri", "mon"]}}
    with pytest.raises(StepError) as info:
        STEP_TYPES["wait"].parse(raw, "steps[4]")
    assert info.value.errors == {"steps[4].next": ['step "w": next is required']}
    step = STEP_TYPES["wait"].parse({**raw, "next": "done"}, "steps[4]")
    assert step.to_json() == {
        "id": "w",
        "type": "wait",
        "until": {"time": "09:30", "weekdays": ["mon", "fri"]},
        "next": "done",
    }
    assert STEP_TYPES["wait"].parse(step.to_json(), "steps[4]") == step
    assert step.edges() == ["done"] and step.is_wait


def test_every_type_round_trips_through_its_stored_form():
    spec = journey(
        {"id": "a", "type": "wait", "duration": 90, "next": "b"},
        {"id": "b", "type": "wait", "untilAttribute": {"key": "due", "offset": -3600}, "next": "c"},
        {
            "id": "c",
            "type": "waitForEvent",
            "event": "buy",
            "where": "sku:A1",
            "matchOn": "cartId",
            "timeout": "1d",
            "next": "d",
            "onTimeout": "d",
        },
        {
            "id": "d",
            "type": "waitForSegment",
            "filter": "plan:pro",
            "timeout": 60,
            "next": "e",
            "onTimeout": "e",
        },
        {
            "id": "e",
            "type": "branch",
            "branches": [
                {"if": {"lastSend": "opened"}, "next": "f"},
                {"if": {"seats": 3}, "next": "f"},
            ],
            "default": "f",
        },
        {
            "id": "f",
            "type": "split",
            "variants": [{"percent": 50.0, "next": "g"}, {"percent": 50, "next": "g"}],
        },
        {"id": "g", "type": "send", "channel": "email", "template": 7.0, "next": "h"},
        {"id": "h", "type": "audience", "add": "VIP", "ttlSeconds": 60.0, "next": "i"},
        {"id": "i", "type": "setAttributes", "attributes": {"stage": 2, "old": None}, "next": "j"},
        {
            "id": "j",
            "type": "webhook",
            "url": "https://hooks.test/a",
            "body": {"x": [1]},
            "saveAs": "score",
            "next": "done",
        },
    )
    stored = to_json(spec)
    steps = {step["id"]: step for step in stored["steps"]}
    assert steps["a"]["duration"] == "90s"
    assert steps["b"]["untilAttribute"] == {"key": "due", "offset": "-3600s"}
    assert steps["c"]["where"] == {"all": [{"attr": "sku", "op": "textEq", "value": "A1"}]}
    assert steps["e"]["branches"][0]["if"] == {"lastSend": "opened"}
    assert steps["e"]["branches"][1]["if"] == {"all": [{"attr": "seats", "op": "eq", "value": 3}]}
    assert steps["f"]["variants"][0] == {"percent": 50, "next": "g"}
    assert steps["g"]["template"] == 7 and steps["h"] == {
        "id": "h",
        "type": "audience",
        "add": "VIP",
        "ttlSeconds": 60,
        "next": "i",
    }
    assert to_json(parse_journey(stored)) == stored


# --- wait ------------------------------------------------------------------------------------


def test_wait_duration_parks_then_goes_on_when_due():
    spec = journey(
        {"id": "w", "type": "wait", "duration": "2h", "next": "m"},
        {"id": "m", "type": "send", "channel": "push", "template": 1, "next": "done"},
    )
    run, effects = run_at(spec)
    assert run.status == "waiting" and run.step == "w"
    assert effects == [Wake(NOW + timedelta(hours=2))]
    early = NOW + timedelta(hours=1, minutes=59)
    assert advance(run, spec, facts(early), early) == (run, [])
    due = NOW + timedelta(hours=2)
    done, effects = advance(run, spec, facts(due), due)
    assert done.status == "exited" and effects[0] == Send("push", 1, "m", 1)


def _until(time, weekdays=None):
    until = {"time": time} if weekdays is None else {"time": time, "weekdays": weekdays}
    return journey({"id": "w", "type": "wait", "until": until, "next": "done"})


def test_wait_until_ten_in_paris_across_the_spring_dst_change():
    spec = _until("10:00")
    paris = UserFacts(now=NOW, timezone="Europe/Paris")
    saturday_noon = datetime(2026, 3, 28, 11, tzinfo=UTC)  # 12:00 CET
    run, effects = run_at(spec, now=saturday_noon, user=paris)
    # Sunday 10:00 is CEST (+02:00) after the change at 02:00: 08:00 UTC, not 09:00.
    assert run.wake_at == datetime(2026, 3, 29, 8, tzinfo=UTC) and effects == [Wake(run.wake_at)]
    # The same wall-clock time the day before the change is 09:00 UTC.
    friday = datetime(2026, 3, 27, 5, tzinfo=UTC)
    assert run_at(spec, now=friday, user=paris)[0].wake_at == datetime(2026, 3, 27, 9, tzinfo=UTC)
    late, _ = advance(run, spec, facts(user=paris), datetime(2026, 3, 29, 8, tzinfo=UTC))
    assert late.status == "exited"


def test_wait_until_a_missing_local_time_moves_forward_and_an_ambiguous_one_takes_the_first():
    paris = UserFacts(now=NOW, timezone="Europe/Paris")
    gap, _ = run_at(_until("02:30"), now=datetime(2026, 3, 28, 23, tzinfo=UTC), user=paris)
    assert gap.wake_at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    overlap, _ = run_at(_until("02:30"), now=datetime(2026, 10, 24, 23, tzinfo=UTC), user=paris)
    assert overlap.wake_at == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the CEST 02:30


def test_wait_until_uses_the_fallback_zone_and_weekdays():
    spec = _until("09:00", ["mon"])
    friday = datetime(2026, 5, 1, 12, tzinfo=UTC)  # a Friday
    unknown = UserFacts(now=friday, timezone="Mars/Olympus")
    run, _ = run_at(spec, now=friday, user=unknown, timezone="America/New_York")
    assert run.wake_at == datetime(2026, 5, 4, 13, tzinfo=UTC)  # Monday 09:00 EDT
    utc, _ = run_at(spec, now=friday)
    assert utc.wake_at == datetime(2026, 5, 4, 9, tzinfo=UTC)
    exactly, _ = run_at(_until("12:00"), now=friday)
    assert exactly.status == "exited"  # a target equal to the arrival goes on at once


def test_wait_until_attribute_with_offset():
    spec = journey(
        {
            "id": "w",
            "type": "wait",
            "untilAttribute": {"key": "trialEndsAt", "offset": "-1d"},
            "next": "done",
        }
    )
    user = UserFacts(now=NOW, attributes={"trialEndsAt": "2026-05-10T12:00:00Z"})
    run, effects = run_at(spec, user=user)
    assert run.wake_at == datetime(2026, 5, 9, 12, tzinfo=UTC) and effects == [Wake(run.wake_at)]
    # A bare date is midnight in the user's zone.
    dated = UserFacts(
        now=NOW, timezone="America/New_York", attributes={"trialEndsAt": "2026-05-10"}
    )
    run, _ = run_at(spec, user=dated)
    assert run.wake_at == datetime(2026, 5, 9, 4, tzinfo=UTC)
    # The date moves: the next advance wakes the run at the new time.
    moved = UserFacts(
        now=NOW, timezone="America/New_York", attributes={"trialEndsAt": "2026-05-20"}
    )
    later = NOW + timedelta(hours=1)
    rerun, effects = advance(run, spec, facts(later, user=moved), later)
    assert rerun.wake_at == datetime(2026, 5, 19, 4, tzinfo=UTC) and effects == [
        Wake(rerun.wake_at)
    ]


def test_wait_until_attribute_in_the_past_goes_on_and_without_a_date_exits():
    spec = journey(
        {
            "id": "w",
            "type": "wait",
            "untilAttribute": {"key": "due", "offset": "2h"},
            "next": "done",
        }
    )
    past = UserFacts(now=NOW, attributes={"due": "2026-04-01T00:00:00Z"})
    run, effects = run_at(spec, user=past)
    assert run.exit_reason == 'exit step "done"' and effects == [Exit('exit step "done"')]
    for value in (None, "soon", 17):
        user = UserFacts(now=NOW, attributes={} if value is None else {"due": value})
        run, effects = run_at(spec, user=user)
        assert run.status == "exited"
        assert run.exit_reason == 'step "w": untilAttribute "due" holds no date'


def test_wait_until_an_entry_property():
    spec = journey(
        {
            "id": "w",
            "type": "wait",
            "untilAttribute": {"key": "entry.deliveryAt", "offset": "+1h"},
            "next": "done",
        }
    )
    run, _ = run_at(spec, {"deliveryAt": "2026-05-02T08:00:00Z"})
    assert run.wake_at == datetime(2026, 5, 2, 9, tzinfo=UTC)


# --- waitForEvent ------------------------------------------------------------------------------


def cart_journey(where=None):
    wait = {
        "id": "w",
        "type": "waitForEvent",
        "event": "purchase",
        "matchOn": "cartId",
        "timeout": "2h",
        "next": "bought",
        "onTimeout": "remind",
    }
    if where is not None:
        wait["where"] = where
    return parse_journey(
        {
            "name": "Cart",
            "trigger": {"event": "add_to_cart"},
            "entry": {"key": "cartId", "policy": "always"},
            "steps": [
                wait,
                {
                    "id": "remind",
                    "type": "send",
                    "channel": "push",
                    "template": "cart",
                    "next": "end",
                },
                {
                    "id": "bought",
                    "type": "setAttributes",
                    "attributes": {"bought": True},
                    "next": "end",
                },
                {"id": "end", "type": "exit"},
            ],
        }
    )


def purchase(at, **properties):
    return IncomingEvent(name="purchase", at=at, properties=properties)


def test_wait_for_event_pairs_two_carts_on_match_on():
    spec = cart_journey()
    cart_a, _ = run_at(spec, {"cartId": "A"})
    cart_b, _ = run_at(spec, {"cartId": "B"})
    assert (cart_a.entry_key, cart_b.entry_key) == ("A", "B")
    assert cart_a.wake_at == NOW + timedelta(hours=2)
    at = NOW + timedelta(minutes=30)
    event = facts(at, event=purchase(at, cartId="A"))
    done_a, effects_a = advance(cart_a, spec, event, at)
    assert done_a.status == "exited" and "bought" in done_a.visits
    assert effects_a[0] == SetAttributes({"bought": True}, "bought", 1)
    assert advance(cart_b, spec, event, at) == (cart_b, [])
    # B times out on its own and gets its own reminder.
    due = NOW + timedelta(hours=2)
    done_b, effects_b = advance(cart_b, spec, facts(due), due)
    assert effects_b[0] == Send("push", "cart", "remind", 1) and "bought" not in done_b.visits


def test_wait_for_event_match_on_compares_typed_and_ignores_missing():
    spec = cart_journey()
    run, _ = run_at(spec, {"cartId": 7})
    at = NOW + timedelta(minutes=1)
    for props in ({"cartId": "7"}, {}, {"cartId": None}):
        assert advance(run, spec, facts(at, event=purchase(at, **props)), at) == (run, [])
    moved, _ = advance(run, spec, facts(at, event=purchase(at, cartId=7.0)), at)
    assert "bought" in moved.visits


def test_wait_for_event_timeout_edge_and_late_processing():
    spec = cart_journey(where={"attr": "total", "op": "gte", "value": 10})
    run, _ = run_at(spec, {"cartId": "A"})
    deadline = NOW + timedelta(hours=2)
    # An event before the wait began, or a non-matching where, does not count.
    cheap = facts(
        deadline - timedelta(minutes=1),
        event=purchase(deadline - timedelta(minutes=1), cartId="A", total=5),
    )
    assert advance(run, spec, cheap, deadline - timedelta(minutes=1)) == (run, [])
    old = facts(NOW, event=purchase(NOW, cartId="A", total=50))
    assert advance(run, spec, old, NOW + timedelta(minutes=1)) == (run, [])
    # An event received in time counts even when processed after the deadline ...
    in_time = purchase(deadline, cartId="A", total=50)
    late, _ = advance(run, spec, facts(event=in_time), deadline + timedelta(minutes=5))
    assert "bought" in late.visits and "remind" not in late.visits
    # ... one received after it does not: the timeout edge.
    too_late = purchase(deadline + timedelta(seconds=1), cartId="A", total=50)
    timed_out, effects = advance(run, spec, facts(event=too_late), deadline + timedelta(seconds=1))
    assert "remind" in timed_out.visits and effects[0].template == "cart"


# --- waitForSegment ----------------------------------------------------------------------------


def segment_journey():
    return journey(
        {
            "id": "w",
            "type": "waitForSegment",
            "filter": "plan:pro",
            "timeout": "1d",
            "next": "yes",
            "onTimeout": "no",
        },
        {
            "id": "yes",
            "type": "send",
            "channel": "email",
            "template": "welcome-pro",
            "next": "done",
        },
        {"id": "no", "type": "send", "channel": "email", "template": "upgrade", "next": "done"},
    )


def test_wait_for_segment_matches_now_later_or_times_out():
    spec = segment_journey()
    pro = UserFacts(now=NOW, attributes={"plan": "pro"})
    free = UserFacts(now=NOW, attributes={"plan": "free"})
    at_once, effects = run_at(spec, user=pro)
    assert effects[0].template == "welcome-pro" and at_once.status == "exited"
    waiting, effects = run_at(spec, user=free)
    assert waiting.wake_at == NOW + timedelta(days=1) and effects == [Wake(waiting.wake_at)]
    hour = NOW + timedelta(hours=1)
    assert advance(waiting, spec, facts(hour, user=free), hour) == (waiting, [])
    upgraded, effects = advance(waiting, spec, facts(hour, user=pro), hour)
    assert effects[0].template == "welcome-pro" and "no" not in upgraded.visits
    day = NOW + timedelta(days=1)
    _, effects = advance(waiting, spec, facts(day, user=free), day)
    assert effects[0].template == "upgrade"


# --- branch ------------------------------------------------------------------------------------


def test_branch_first_match_wins_else_default():
    spec = journey(
        {
            "id": "b",
            "type": "branch",
            "default": "other",
            "branches": [
                {"if": "plan:pro", "next": "pro"},
                {"if": {"attr": "seats", "op": "gte", "value": 5}, "next": "big"},
            ],
        },
        {"id": "pro", "type": "send", "channel": "push", "template": "pro", "next": "done"},
        {"id": "big", "type": "send", "channel": "push", "template": "big", "next": "done"},
        {"id": "other", "type": "send", "channel": "push", "template": "other", "next": "done"},
    )

    def template(**attributes):
        _, effects = run_at(spec, user=UserFacts(now=NOW, attributes=attributes))
        return effects[0].template

    assert template(plan="pro", seats=9) == "pro"  # both match: the first wins
    assert template(plan="free", seats=9) == "big"
    assert template(plan="free", seats=1) == "other"


def test_branch_on_last_send_reads_the_runs_latest_message():
    spec = journey(
        {"id": "mail", "type": "send", "channel": "email", "template": "offer", "next": "b0"},
        {
            "id": "b0",
            "type": "branch",
            "branches": [{"if": {"lastSend": "sent"}, "next": "sms"}],
            "default": "w",
        },
        {"id": "w", "type": "wait", "duration": "2s", "next": "b"},
        {
            "id": "b",
            "type": "branch",
            "branches": [
                {"if": {"lastSend": "failed"}, "next": "sms"},
                {"if": {"lastSend": "opened"}, "next": "done"},
            ],
            "default": "sms",
        },
        {"id": "sms", "type": "send", "channel": "sms", "template": "offer-sms", "next": "done"},
    )
    run, effects = run_at(spec)
    # The send of this same advance has no status yet: b0 falls through to the wait.
    assert effects == [Send("email", "offer", "mail", 1), Wake(NOW + timedelta(seconds=2))]
    assert run.last_send == ("mail", 1) and run.step == "w"
    due = NOW + timedelta(seconds=2)
    for status, fallback in (
        ("clicked", False),
        ("opened", False),
        ("delivered", True),
        ("failed", True),
        (None, True),
        ("suppressed", True),
    ):
        done, effects = advance(run, spec, facts(due, last_send_status=status), due)
        assert ("sms" in done.visits) is fallback, status
        assert (Send("sms", "offer-sms", "sms", 1) in effects) is fallback


# --- split -------------------------------------------------------------------------------------


def split_journey():
    return journey(
        {
            "id": "ab",
            "type": "split",
            "variants": [{"percent": 30, "next": "a"}, {"percent": 70, "next": "b"}],
        },
        {"id": "a", "type": "send", "channel": "push", "template": "A", "next": "done"},
        {"id": "b", "type": "send", "channel": "push", "template": "B", "next": "done"},
    )


def test_split_proportions_on_ten_thousand_ids_and_determinism():
    spec = split_journey()
    counts = {"A": 0, "B": 0}
    first = {}
    for user in range(10_000):
        _, effects = run_at(spec, journey_id="42", run_key=f"{user}:")
        counts[effects[0].template] += 1
        first[user] = effects[0].template
    assert 2_800 <= counts["A"] <= 3_200, counts
    for user in range(0, 10_000, 97):
        _, effects = run_at(spec, journey_id="42", run_key=f"{user}:")
        assert effects[0].template == first[user]
    # Another journey shuffles users differently.
    other = sum(
        run_at(spec, journey_id="43", run_key=f"{user}:")[1][0].template != first[user]
        for user in range(1_000)
    )
    assert other > 200


def test_split_bucket_is_a_stable_hash_not_pythons():
    # Pinned: any process, any PYTHONHASHSEED, any machine gives these.
    assert split_bucket("42", "7:", "ab") == split_bucket("42", "7:", "ab")
    assert [split_bucket("1", str(n), "s") for n in range(3)] == [
        split_bucket("1", "0", "s"),
        split_bucket("1", "1", "s"),
        split_bucket("1", "2", "s"),
    ]
    import hashlib

    digest = hashlib.sha256(b"42\x1f7:\x1fab").digest()
    assert split_bucket("42", "7:", "ab") == int.from_bytes(digest[:8], "big") % 10_000


# --- send, audience, setAttributes ---------------------------------------------------------------


def test_send_audience_and_attributes_effects_and_in_advance_visibility():
    spec = journey(
        {"id": "join", "type": "audience", "add": "Trial", "ttlSeconds": 3600, "next": "set"},
        {
            "id": "set",
            "type": "setAttributes",
            "attributes": {"stage": "trial", "old": None},
            "next": "b",
        },
        {
            "id": "b",
            "type": "branch",
            "default": "done",
            "branches": [
                {
                    "if": {
                        "all": [
                            {"attr": "stage", "op": "eq", "value": "trial"},
                            {"attr": "old", "op": "notExists"},
                            {"audience": "Trial"},
                        ]
                    },
                    "next": "m",
                }
            ],
        },
        {"id": "m", "type": "send", "channel": "inapp", "template": 3, "next": "leave"},
        {"id": "leave", "type": "audience", "remove": 9, "next": "done"},
    )
    user = UserFacts(now=NOW, attributes={"old": 1})
    run, effects = run_at(spec, user=user)
    assert effects == [
        AudienceChange("add", "Trial", 3600, "join", 1),
        SetAttributes({"stage": "trial", "old": None}, "set", 1),
        Send("inapp", 3, "m", 1),
        AudienceChange("remove", 9, None, "leave", 1),
        Exit('exit step "done"'),
    ]
    assert run.last_send == ("m", 1)


# --- webhook -----------------------------------------------------------------------------------


def webhook_journey():
    return journey(
        {
            "id": "score",
            "type": "webhook",
            "url": "https://scores.test/v1",
            "body": {"k": 1},
            "saveAs": "score",
            "next": "b",
        },
        {
            "id": "b",
            "type": "branch",
            "default": "plain",
            "branches": [
                {"if": {"attr": "score.body.tier", "op": "eq", "value": "gold"}, "next": "gold"},
                {"if": {"attr": "score.ok", "op": "eq", "value": False}, "next": "failed"},
            ],
        },
        {"id": "gold", "type": "send", "channel": "push", "template": "gold", "next": "done"},
        {"id": "plain", "type": "send", "channel": "push", "template": "plain", "next": "done"},
        {"id": "failed", "type": "send", "channel": "push", "template": "failed", "next": "done"},
    )


def test_webhook_waits_for_its_answer_then_a_branch_reads_it():
    spec = webhook_journey()
    run, effects = run_at(spec)
    assert run.status == "waiting" and run.step == "score" and run.wake_at is not None
    assert effects == [
        CallWebhook("https://scores.test/v1", {"k": 1}, "score", "score", 1),
        Wake(run.wake_at),
    ]
    later = NOW + timedelta(seconds=3)
    assert advance(run, spec, facts(later), later) == (run, [])
    stale = WebhookResult(step="score", visit=2, ok=True, status=200, body={"tier": "gold"})
    assert advance(run, spec, facts(later, webhook_result=stale), later) == (run, [])
    answer = WebhookResult(step="score", visit=1, ok=True, status=200, body={"tier": "gold"})
    done, effects = advance(run, spec, facts(later, webhook_result=answer), later)
    assert done.context["saved"]["score"] == {"ok": True, "status": 200, "body": {"tier": "gold"}}
    assert effects[0] == Send("push", "gold", "gold", 1)
    silver = WebhookResult(step="score", visit=1, ok=True, status=200, body={"tier": "silver"})
    assert advance(run, spec, facts(later, webhook_result=silver), later)[1][0].template == "plain"


def test_webhook_timeout_continues_as_failed_and_large_bodies_are_not_kept():
    spec = webhook_journey()
    run, _ = run_at(spec)
    timed_out, effects = advance(run, spec, facts(run.wake_at), run.wake_at)
    assert timed_out.context["saved"]["score"]["error"] == "timeout"
    assert effects[0].template == "failed"
    huge = WebhookResult(step="score", visit=1, ok=True, status=200, body={"tier": "x" * 20_000})
    later = NOW + timedelta(seconds=1)
    kept, _ = advance(run, spec, facts(later, webhook_result=huge), later)
    assert kept.context["saved"]["score"] == {
        "ok": True,
        "status": 200,
        "body": None,
        "truncated": True,
    }


def test_a_replayed_arrival_with_the_answer_recorded_does_not_call_again():
    spec = webhook_journey()
    first = start(spec, None, NOW)
    answer = WebhookResult(step="score", visit=1, ok=True, status=200, body={"tier": "gold"})
    run, effects = advance(first, spec, facts(webhook_result=answer), NOW)
    assert run.context["saved"]["score"]["body"] == {"tier": "gold"}
    assert not any(isinstance(effect, CallWebhook) for effect in effects)
    assert effects[0] == Send("push", "gold", "gold", 1)


# --- exit ----------------------------------------------------------------------------------------


def test_exit_step_ends_the_run_for_good():
    spec = journey()
    run, effects = run_at(spec)
    assert run.status == "exited" and run.step is None and run.wake_at is None
    assert effects == [Exit('exit step "done"')]
    assert advance(run, spec, facts(NOW + timedelta(days=9)), NOW + timedelta(days=9)) == (run, [])


def test_one_event_resumes_one_wait():
    wait = {"type": "waitForEvent", "event": "click", "timeout": "1h"}
    spec = journey(
        {"id": "w1", **wait, "next": "w2", "onTimeout": "done"},
        {"id": "w2", **wait, "next": "m", "onTimeout": "done"},
        {"id": "m", "type": "send", "channel": "push", "template": "twice", "next": "done"},
    )
    run, _ = run_at(spec)
    at = NOW + timedelta(minutes=1)
    click = facts(at, event=IncomingEvent(name="click", at=at))
    first, effects = advance(run, spec, click, at)
    assert first.step == "w2" and effects == [Wake(at + timedelta(hours=1))]
    assert advance(first, spec, click, at) == (first, [])  # the same click again: nothing
    later = at + timedelta(seconds=1)
    second, effects = advance(
        first, spec, facts(later, event=IncomingEvent(name="click", at=later)), later
    )
    assert effects[0] == Send("push", "twice", "m", 1) and second.status == "exited"
