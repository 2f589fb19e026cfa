"""The pure rules code: validation with field paths, trigger matching, chain bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from journeys.rules import (
    STOPPED_ONCE,
    Cause,
    CompiledRule,
    RuleError,
    RuleIndex,
    admission,
    parse_rule,
    run_chain,
    set_reference,
    trigger_matches,
)

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def errors_of(body, **kwargs):
    with pytest.raises(RuleError) as info:
        parse_rule(body, **kwargs)
    return info.value.errors


def rule(id, when, actions=(), priority=0, condition=None):
    kind = next(
        k for k in when if k in ("event", "audienceEntered", "audienceLeft", "attributeChanged")
    )
    return CompiledRule.build(
        id=id,
        priority=priority,
        trigger_kind=kind,
        trigger_key=str(when[kind]),
        when=when,
        condition=condition,
        actions=list(actions),
    )


# --- validation -----------------------------------------------------------------------------


def test_a_full_rule_is_normalized_with_its_references_listed():
    spec = parse_rule(
        {
            "when": {"event": "add_to_cart", "where": "sku:A1"},
            "if": "plan:pro",
            "then": [{"addToAudience": "Almost bought", "ttlSeconds": 3600.0}, {"sendCampaign": 7}],
        }
    )
    assert spec.enabled is True and spec.priority == 0
    assert spec.trigger_kind == "event" and spec.trigger_key == "add_to_cart"
    assert spec.when["where"] == {"all": [{"attr": "sku", "op": "textEq", "value": "A1"}]}
    assert spec.condition == {"all": [{"attr": "plan", "op": "textEq", "value": "pro"}]}
    assert spec.actions == [
        {"addToAudience": "Almost bought", "ttlSeconds": 3600},
        {"sendCampaign": 7},
    ]
    assert spec.references == [
        ("then[0].addToAudience", "audience", "Almost bought"),
        ("then[1].sendCampaign", "campaign", 7),
    ]
    set_reference(spec, "then[0].addToAudience", 12)
    assert spec.actions[0]["addToAudience"] == 12


def test_audience_triggers_resolve_to_the_id_as_their_key():
    spec = parse_rule(
        {"when": {"audienceEntered": "Bought"}, "then": [{"setAttributes": {"vip": True}}]}
    )
    set_reference(spec, "when.audienceEntered", 5)
    assert spec.when == {"audienceEntered": 5} and spec.trigger_key == "5"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"when": {"event": ""}, "then": [{"sendCampaign": 1}]}, "when.event"),
        (
            {"when": {"event": "a", "where": {"plan": None}}, "then": [{"sendCampaign": 1}]},
            "when.where.plan",
        ),
        (
            {"when": {"event": "a", "where": {"event": "b"}}, "then": [{"sendCampaign": 1}]},
            "when.where",
        ),
        ({"when": {"event": "a", "extra": 1}, "then": [{"sendCampaign": 1}]}, "when.extra"),
        ({"when": {"event": "a", "audienceLeft": 1}, "then": [{"sendCampaign": 1}]}, "when"),
        (
            {"when": {"attributeChanged": "plan", "to": [1]}, "then": [{"sendCampaign": 1}]},
            "when.to",
        ),
        ({"when": {"audienceEntered": " "}, "then": [{"sendCampaign": 1}]}, "when.audienceEntered"),
        (
            {"when": {"event": "a"}, "if": {"all": [{"attr": "x"}]}, "then": [{"sendCampaign": 1}]},
            "if.all[0]",
        ),
        ({"when": {"event": "a"}, "then": []}, "then"),
        ({"when": {"event": "a"}, "then": [{"addToAudience": 0}]}, "then[0].addToAudience"),
        (
            {
                "when": {"event": "a"},
                "then": [{"sendCampaign": 1}, {"addToAudience": 1, "ttlSeconds": 0}],
            },
            "then[1].ttlSeconds",
        ),
        ({"when": {"event": "a"}, "then": [{"setAttributes": {}}]}, "then[0].setAttributes"),
        ({"when": {"event": "a"}, "then": [{"bogus": 1}]}, "then[0]"),
        (
            {"when": {"event": "a"}, "then": [{"removeFromAudience": 1, "ttlSeconds": 5}]},
            "then[0].ttlSeconds",
        ),
        ({"when": {"event": "a"}, "then": [{"sendCampaign": 1}], "priority": True}, "priority"),
        ({"then": [{"sendCampaign": 1}]}, "when"),
    ],
)
def test_bad_input_names_the_field_path(body, path):
    assert path in errors_of(body)


def test_start_journey_names_a_journey_and_takes_params():
    spec = parse_rule(
        {"when": {"event": "a"}, "then": [{"startJourney": "onboarding", "params": {"x": 1}}]}
    )
    assert spec.actions == [{"startJourney": "onboarding", "params": {"x": 1}}]
    assert spec.references == [("then[0].startJourney", "journey", "onboarding")]
    errors = errors_of({"when": {"event": "a"}, "then": [{"startJourney": 1, "params": [1]}]})
    assert list(errors) == ["then[0].params"]
    assert list(errors_of({"when": {"event": "a"}, "then": [{"startJourney": " "}]})) == [
        "then[0].startJourney"
    ]


def test_patch_validates_only_the_given_fields():
    spec = parse_rule({"priority": 5}, partial=True)
    assert spec.priority == 5 and spec.when is None and spec.actions is None
    assert spec.enabled is None and not spec.condition_given


# --- matching -------------------------------------------------------------------------------


def test_event_where_filters_the_event_properties():
    r = rule(
        1, {"event": "purchase", "where": {"all": [{"attr": "total", "op": "gte", "value": 100}]}}
    )
    assert trigger_matches(r, Cause("event", "purchase", {"total": 150}), NOW)
    assert not trigger_matches(r, Cause("event", "purchase", {"total": 50}), NOW)
    assert not trigger_matches(r, Cause("event", "purchase", {}), NOW)
    assert not trigger_matches(r, Cause("event", "refund", {"total": 150}), NOW)


def test_attribute_changed_from_and_to_are_typed_and_null_means_absent():
    r = rule(1, {"attributeChanged": "plan", "from": None, "to": "pro"})
    assert trigger_matches(r, Cause("attributeChanged", "plan", before=None, after="pro"), NOW)
    assert not trigger_matches(
        r, Cause("attributeChanged", "plan", before="free", after="pro"), NOW
    )
    any_change = rule(2, {"attributeChanged": "seats", "to": 3})
    assert trigger_matches(any_change, Cause("attributeChanged", "seats", before=1, after=3.0), NOW)
    assert not trigger_matches(
        any_change, Cause("attributeChanged", "seats", before=1, after="3"), NOW
    )
    assert not trigger_matches(
        any_change, Cause("attributeChanged", "seats", before=1, after=True), NOW
    )


def test_index_orders_by_priority_then_id():
    rules = [
        rule(3, {"event": "a"}, priority=1),
        rule(2, {"event": "a"}),
        rule(1, {"event": "a"}, priority=1),
    ]
    index = RuleIndex(rules)
    assert [r.id for r in index.matching(Cause("event", "a"), NOW)] == [2, 1, 3]
    assert index.listens("event", "a") and not index.listens("event", "b")


# --- chains ---------------------------------------------------------------------------------


def test_admission_bounds_depth_and_repeats():
    assert admission(1, 0, set()) is None
    assert admission(1, 9, set()) is None
    assert admission(1, 10, set()) == "chain depth 10 reached"
    assert admission(1, 3, {1}) == STOPPED_ONCE
    assert admission(1, 2, set(), max_depth=2) == "chain depth 2 reached"


def _audience_world():
    """apply() for audience actions on one user's set of audience ids."""
    members: set[str] = set()

    def apply(_rule, action):
        kind = next(iter(action))
        key = str(action[kind])
        if kind == "addToAudience" and key not in members:
            members.add(key)
            return {kind: key, "result": "joined"}, [Cause("audienceEntered", key)]
        if kind == "removeFromAudience" and key in members:
            members.discard(key)
            return {kind: key, "result": "left"}, [Cause("audienceLeft", key)]
        return {kind: key, "result": "unchanged"}, []

    return members, apply


def test_a_chain_runs_breadth_first_and_stops_at_the_depth_bound():
    # r0 on the event adds to audience 1; r_i on entering i adds to i+1: r10 would be depth 10.
    rules = [rule(100, {"event": "go"}, [{"addToAudience": 1}])]
    rules += [
        rule(100 + i, {"audienceEntered": i}, [{"addToAudience": i + 1}]) for i in range(1, 11)
    ]
    members, apply = _audience_world()
    firings = run_chain(
        [Cause("event", "go")],
        RuleIndex(rules),
        condition_holds=lambda r: True,
        apply=apply,
        now=NOW,
    )
    assert [(f.rule.id, f.depth, f.status) for f in firings][:2] == [
        (100, 0, "fired"),
        (101, 1, "fired"),
    ]
    assert firings[-1].status == "stopped" and firings[-1].reason == "chain depth 10 reached"
    assert firings[-1].rule.id == 110 and firings[-1].depth == 10
    assert firings[-1].chain == tuple(range(100, 110))
    assert members == {str(i) for i in range(1, 11)}


def test_a_loop_stops_when_a_rule_would_fire_twice_for_one_event():
    # Entering X removes from X; leaving X adds to X again: each fires once, then stops.
    rules = [
        rule(1, {"event": "go"}, [{"addToAudience": 9}]),
        rule(2, {"audienceEntered": 9}, [{"removeFromAudience": 9}]),
        rule(3, {"audienceLeft": 9}, [{"addToAudience": 9}]),
    ]
    _, apply = _audience_world()
    firings = run_chain(
        [Cause("event", "go")],
        RuleIndex(rules),
        condition_holds=lambda r: True,
        apply=apply,
        now=NOW,
    )
    assert [(f.rule.id, f.status, f.reason) for f in firings] == [
        (1, "fired", None),
        (2, "fired", None),
        (3, "fired", None),
        (2, "stopped", STOPPED_ONCE),
    ]


def test_a_false_if_skips_without_applying_and_may_fire_later():
    rules = [rule(1, {"event": "go"}, [{"addToAudience": 1}], condition={"all": []})]
    _, apply = _audience_world()
    firings = run_chain(
        [Cause("event", "go")],
        RuleIndex(rules),
        condition_holds=lambda r: False,
        apply=apply,
        now=NOW,
    )
    assert [(f.status, f.results) for f in firings] == [("skipped", [])]
