"""Journey bodies: trigger, entry, exit, goal validation, the step graph and the stored forms."""

from __future__ import annotations

import pytest

from journeys.journey import (
    JourneyError,
    canonical_json,
    fingerprint,
    listened_events,
    parse_journey,
    required_event_names,
    resolve_references,
    to_json,
)

EXIT = {"id": "done", "type": "exit"}


def send(step_id, next_step="done", template="t"):
    return {
        "id": step_id,
        "type": "send",
        "channel": "push",
        "template": template,
        "next": next_step,
    }


def wait(step_id, next_step="done"):
    return {"id": step_id, "type": "wait", "duration": "1h", "next": next_step}


def body(steps=None, **top):
    return {
        "name": "J",
        "trigger": {"event": "signup"},
        "steps": [EXIT] if steps is None else steps,
        **top,
    }


def errors_of(raw, **kwargs):
    with pytest.raises(JourneyError) as info:
        parse_journey(raw, **kwargs)
    return info.value.errors


# --- top level ---------------------------------------------------------------------------------


def test_required_fields_and_the_error_message():
    errors = errors_of({})
    assert errors == {"name": ["required"], "trigger": ["required"], "steps": ["required"]}
    with pytest.raises(JourneyError, match=r"^Invalid journey: name: required"):
        parse_journey({})
    assert errors_of(body(name="  "))["name"][0].startswith("a string of 1-255")
    assert errors_of(body(steps=[]))["steps"] == ["a non-empty list of steps"]
    assert errors_of(body(steps=[EXIT] * 201))["steps"] == ["at most 200 steps"]
    assert errors_of(body(name="a\x00b")) == {"_schema": ["contains a NUL character"]}


@pytest.mark.parametrize(
    ("trigger", "path", "reason"),
    [
        ({}, "trigger", "exactly one of event, audienceEntered, segmentEntered, api"),
        ({"event": "a", "api": True}, "trigger", "exactly one of"),
        ({"event": ""}, "trigger.event", "a string of 1-255 characters"),
        ({"event": "a", "where": "plan:"}, "trigger.where[0].value", "empty value"),
        ({"event": "a", "if": "x:y"}, "trigger.if", "unknown field"),
        ({"audienceEntered": 0}, "trigger.audienceEntered", "an id from 1"),
        ({"segmentEntered": {"attr": "x", "op": "nope"}}, "trigger.segmentEntered.op", ""),
        ({"api": False}, "trigger.api", "must be true"),
        ("signup", "trigger", "an object with one of"),
    ],
)
def test_trigger_errors(trigger, path, reason):
    errors = errors_of(body(trigger=trigger))
    assert path in errors and reason in errors[path][0], errors


def test_triggers_normalize():
    where = parse_journey(body(trigger={"event": "buy", "where": {"sku": "A"}}))
    assert to_json(where)["trigger"] == {
        "event": "buy",
        "where": {"all": [{"attr": "sku", "op": "eq", "value": "A"}]},
    }
    segment = parse_journey(body(trigger={"segmentEntered": "plan:pro"}))
    assert to_json(segment)["trigger"]["segmentEntered"]["all"][0]["attr"] == "plan"
    audience = parse_journey(body(trigger={"audienceEntered": 4.0}))
    assert to_json(audience)["trigger"] == {"audienceEntered": 4}
    assert audience.references == (("trigger.audienceEntered", "audience", 4),)
    assert to_json(parse_journey(body(trigger={"api": True})))["trigger"] == {"api": True}


@pytest.mark.parametrize(
    ("entry", "trigger", "path", "reason"),
    [
        ({"policy": "twice"}, None, "entry.policy", "one of once, always, oncePer"),
        ({"policy": "oncePer"}, None, "entry.period", "required with the policy oncePer"),
        ({"policy": "always", "period": "1d"}, None, "entry.period", "only with the policy"),
        ({"policy": "oncePer", "period": "1y"}, None, "entry.period", "not a duration"),
        ({"key": "order id"}, None, "entry.key", "property name"),
        ({"existingMembers": "yes"}, None, "entry.existingMembers", "true or false"),
        ({"existingMembers": True}, None, "entry.existingMembers", "audienceEntered or"),
        ({"key": "orderId"}, {"audienceEntered": "VIP"}, "entry.key", "only with an event or api"),
        ({"limit": 1}, None, "entry.limit", "unknown field"),
    ],
)
def test_entry_errors(entry, trigger, path, reason):
    raw = body(entry=entry)
    if trigger is not None:
        raw["trigger"] = trigger
    errors = errors_of(raw)
    assert path in errors and reason in errors[path][0], errors


def test_entry_defaults_and_forms():
    assert to_json(parse_journey(body()))["entry"] == {"policy": "once", "existingMembers": False}
    spec = parse_journey(body(entry={"policy": "oncePer", "period": 86400, "key": "orderId"}))
    assert to_json(spec)["entry"] == {
        "policy": "oncePer",
        "period": "86400s",
        "key": "orderId",
        "existingMembers": False,
    }
    members = parse_journey(
        body(trigger={"segmentEntered": "plan:pro"}, entry={"existingMembers": True})
    )
    assert members.entry.existing_members is True


def test_exit_and_goal():
    spec = parse_journey(
        body(
            exit=[{"event": "cancel", "matchOn": "orderId"}, {"leftSegment": "plan:pro"}],
            goal={"event": "purchase", "where": "total:10", "within": "7d"},
        )
    )
    stored = to_json(spec)
    assert stored["exit"][0] == {"event": "cancel", "matchOn": "orderId"}
    assert "leftSegment" in stored["exit"][1]
    assert stored["goal"]["within"] == "7d" and stored["goal"]["where"]["all"][0]["attr"] == "total"
    errors = errors_of(
        body(
            exit=[{"event": "x", "leftSegment": "a:b"}, {"event": "y", "matchOn": 3}, "z"],
            goal={"event": "g", "within": "soon", "value": 1},
        )
    )
    assert set(errors) == {"exit[0]", "exit[1].matchOn", "exit[2]", "goal.within", "goal.value"}
    assert errors_of(body(exit=[{"event": "x"}] * 21))["exit"] == ["at most 20 exits"]
    no_entry_event = body(
        trigger={"audienceEntered": 1}, exit=[{"event": "cancel", "matchOn": "orderId"}]
    )
    assert "needs an event or api trigger" in errors_of(no_entry_event)["exit[0].matchOn"][0]


# --- the graph ---------------------------------------------------------------------------------


def test_a_dangling_edge_names_the_step_and_field():
    errors = errors_of(body([send("remind", "nope"), EXIT]))
    assert errors == {"steps[0].next": ['step "remind": next "nope" is no step']}
    branch = {
        "id": "b",
        "type": "branch",
        "branches": [{"if": "a:b", "next": "gone"}],
        "default": "done",
    }
    errors = errors_of(body([branch, EXIT]))
    assert errors == {"steps[0].branches[0].next": ['step "b": branches[0].next "gone" is no step']}


def test_duplicate_ids():
    errors = errors_of(body([send("a", "a2"), send("a2"), send("a"), EXIT]))
    assert errors["steps[2].id"] == ['step "a": id "a" is already used by steps[0]']


def test_an_unreachable_step():
    errors = errors_of(body([send("a"), send("orphan"), EXIT]))
    assert errors == {"steps[1]": ['step "orphan": not reachable from the first step "a"']}


def test_a_loop_without_a_wait_is_refused():
    branch = {
        "id": "b",
        "type": "branch",
        "branches": [{"if": "x:1", "next": "done"}],
        "default": "a",
    }
    errors = errors_of(body([send("a", "b"), branch, EXIT]))
    assert errors == {
        "steps[0]": ['step "a": the loop a → b → a does not pass through a waiting step']
    }
    self_loop = {
        "id": "s",
        "type": "split",
        "variants": [{"percent": 50, "next": "s"}, {"percent": 50, "next": "done"}],
    }
    assert "s → s" in errors_of(body([self_loop, EXIT]))["steps[0]"][0]


def test_a_loop_through_a_wait_is_accepted():
    for waiting in (
        wait("w", "a"),
        {
            "id": "w",
            "type": "waitForEvent",
            "event": "e",
            "timeout": "1d",
            "next": "a",
            "onTimeout": "done",
        },
        {
            "id": "w",
            "type": "waitForSegment",
            "filter": "a:b",
            "timeout": "1d",
            "next": "done",
            "onTimeout": "a",
        },
    ):
        branch = {
            "id": "b",
            "type": "branch",
            "branches": [{"if": "x:1", "next": "done"}],
            "default": "w",
        }
        spec = parse_journey(body([send("a", "b"), branch, waiting, EXIT]))
        assert [step.id for step in spec.steps] == ["a", "b", "w", "done"]


def test_a_long_wait_free_path_is_refused():
    chain = [send(f"s{i}", f"s{i + 1}") for i in range(98)] + [send("s98"), EXIT]
    errors = errors_of(body(chain))
    assert errors == {
        "steps[0]": ['step "s0": 100 steps in a row without a waiting step (at most 98)']
    }
    chain[50] = wait("s50", "s51")
    assert parse_journey(body(chain)).first == "s0"


def test_match_on_in_a_step_needs_an_entry_event():
    step = {
        "id": "w",
        "type": "waitForEvent",
        "event": "e",
        "matchOn": "cartId",
        "timeout": "1h",
        "next": "done",
        "onTimeout": "done",
    }
    errors = errors_of(body([step, EXIT], trigger={"segmentEntered": "a:b"}))
    assert errors["steps[0].matchOn"] == [
        'step "w": matchOn needs an event or api trigger (an entry event)'
    ]


# --- stored forms ------------------------------------------------------------------------------


def test_partial_parses_only_the_given_fields():
    spec = parse_journey({"name": "Renamed"}, partial=True)
    assert to_json(spec) == {"name": "Renamed"}
    spec = parse_journey({"goal": None, "entry": {"policy": "always"}}, partial=True)
    assert to_json(spec) == {"goal": None, "entry": {"policy": "always", "existingMembers": False}}
    assert "steps[0].next" in errors_of({"steps": [send("a", "b"), EXIT]}, partial=True)


def test_canonical_form_ignores_spelling_and_the_name():
    one = parse_journey(
        body(
            [{"id": "m", "type": "send", "channel": "push", "template": 3.0, "next": "done"}, EXIT],
            trigger={"event": "buy", "where": "sku:A"},
        )
    )
    two = parse_journey(
        {
            "steps": [
                {"next": "done", "template": 3, "channel": "push", "type": "send", "id": "m"},
                EXIT,
            ],
            "trigger": {
                "where": {"all": [{"attr": "sku", "op": "textEq", "value": "A"}]},
                "event": "buy",
            },
            "name": "Another name",
        }
    )
    assert canonical_json(one) == canonical_json(two) and fingerprint(one) == fingerprint(two)
    three = parse_journey(body([send("m", template=4), EXIT], trigger={"event": "buy"}))
    assert fingerprint(three) != fingerprint(one)
    assert len(fingerprint(one)) == 64


def test_references_resolve_by_path():
    spec = parse_journey(
        body(
            [
                {"id": "m", "type": "send", "channel": "email", "template": "Welcome", "next": "a"},
                {"id": "a", "type": "audience", "add": "VIP", "next": "done"},
                EXIT,
            ],
            trigger={"audienceEntered": "Signed up"},
        )
    )
    assert spec.references == (
        ("trigger.audienceEntered", "audience", "Signed up"),
        ("steps[0].template", "template", "Welcome"),
        ("steps[1].add", "audience", "VIP"),
    )
    resolved = resolve_references(
        spec, {"trigger.audienceEntered": 5, "steps[0].template": 8, "steps[1].add": 9}
    )
    stored = to_json(resolved)
    assert stored["trigger"] == {"audienceEntered": 5}
    assert stored["steps"][0]["template"] == 8 and stored["steps"][1]["add"] == 9
    assert [ref[2] for ref in resolved.references] == [5, 8, 9]


def test_event_names_the_worker_needs():
    spec = parse_journey(
        body(
            [
                {
                    "id": "b",
                    "type": "branch",
                    "default": "w",
                    "branches": [{"if": {"event": "login", "within": "7d"}, "next": "w"}],
                },
                {
                    "id": "w",
                    "type": "waitForEvent",
                    "event": "purchase",
                    "timeout": "1d",
                    "next": "done",
                    "onTimeout": "done",
                },
                EXIT,
            ],
            exit=[{"event": "unsubscribe"}, {"leftSegment": {"event": "churn"}}],
            goal={"event": "upgrade"},
        )
    )
    assert required_event_names(spec) == {"login", "churn"}
    assert listened_events(spec) == {"purchase", "unsubscribe", "upgrade"}
