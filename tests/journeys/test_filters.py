"""Unit tests of the segment filter language: parsing, serialising and evaluating."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from journeys.durations import parse_duration
from journeys.filters import (
    AllOf,
    AnyOf,
    AttributeCondition,
    AudienceCondition,
    ChannelCondition,
    EventCondition,
    EventFact,
    FilterError,
    Not,
    UserFacts,
    evaluate,
    parse_filter,
    required_event_names,
    to_json,
    to_string_form,
)
from journeys.timestamps import parse_timestamp
from workers.channels import reachable_channels

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def facts(**kwargs: Any) -> UserFacts:
    """Facts as a caller builds them: reachability from the channel registry."""
    kwargs.setdefault("now", NOW)
    has_push = kwargs.pop("has_push", False)
    if "reachable" not in kwargs:
        profile = SimpleNamespace(
            id=1,
            external_id=kwargs.get("user_id"),
            email=kwargs.get("email"),
            phone=kwargs.get("phone"),
        )
        kwargs["reachable"] = reachable_channels(profile) | ({"push"} if has_push else frozenset())
    return UserFacts(**kwargs)


def matches(raw: Any, **kwargs: Any) -> bool:
    return evaluate(parse_filter(raw), facts(**kwargs))


def text(attr: str, value: str) -> AttributeCondition:
    return AttributeCondition(attr, "textEq", value)


# --- the string form -----------------------------------------------------------------------


def test_string_form_is_an_and_of_text_equalities() -> None:
    assert parse_filter("plan:pro,role:admin") == AllOf(
        (text("plan", "pro"), text("role", "admin"))
    )


def test_string_form_trims_and_keeps_inner_spaces() -> None:
    assert parse_filter("  company : Acme Corp , x:1") == AllOf(
        (text("company", "Acme Corp"), text("x", "1"))
    )


def test_string_form_pipe_is_any_of() -> None:
    assert parse_filter("role:admin|owner") == AllOf(
        (AttributeCondition("role", "textIn", ("admin", "owner")),)
    )


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ('title:"VP, Sales"', "VP, Sales"),
        ('url:"http://x.io/a|b"', "http://x.io/a|b"),
        (r'quote:"say \"hi\""', 'say "hi"'),
        (r'path:"C:\\temp"', "C:\\temp"),
        ('empty:""', ""),
        ('spaced:"  padded  "', "  padded  "),
    ],
)
def test_string_form_quoting(raw: str, value: str) -> None:
    assert parse_filter(raw) == AllOf((text(raw.split(":", 1)[0], value),))


def test_empty_string_matches_everyone() -> None:
    assert parse_filter("  ") == AllOf(())
    assert matches("")


@pytest.mark.parametrize(
    ("raw", "path", "position"),
    [
        ("plan:pro,:x", "[1].attr", 9),
        ("plan:pro,role", "[1]", 13),
        ("plan", "[0]", 4),
        ("plan:pro,", "[1]", 9),
        ('title:"VP, Sales', "[0].value", 6),
        ("plan:", "[0].value", 5),
        ("time:10:00", "[0].value", 7),
        ('a:"x"y', "[0].value", 5),
        (r'a:"\n"', "[0].value", 3),
        ("pl an:x", "[0].attr", 0),
        ("createdAt:2026-01-01", "[0].op", 0),
    ],
)
def test_string_form_errors_say_where(raw: str, path: str, position: int) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(raw)
    assert caught.value.path == path
    assert caught.value.position == position
    assert f"position {position}" in str(caught.value)


def test_string_form_compares_as_text() -> None:
    cond = "count:3"
    assert matches(cond, attributes={"count": 3})
    assert matches(cond, attributes={"count": 3.0})
    assert matches(cond, attributes={"count": "3"})
    assert not matches(cond, attributes={"count": "3.0"})
    assert matches("count:3.0", attributes={"count": 3})
    assert not matches("count:3.0", attributes={"count": "3"})
    assert matches("beta:true", attributes={"beta": True})
    assert not matches("beta:true", attributes={"beta": 1})
    assert matches("beta:false", attributes={"beta": False})
    assert not matches("tags:a", attributes={"tags": ["a"]})
    assert not matches("count:3", attributes={})


def test_string_form_on_profile_fields() -> None:
    assert matches("email:a@x.io", email="a@x.io")
    assert not matches("email:A@x.io", email="a@x.io")
    assert matches("userId:42", user_id="42")


# --- the object form and tree detection ----------------------------------------------------


def test_object_form_is_an_and_of_typed_equalities() -> None:
    cond = parse_filter({"tenant_id": "acme-corp", "seats": 3, "role": ["admin", "owner"]})
    assert cond == AllOf(
        (
            AttributeCondition("tenant_id", "eq", "acme-corp"),
            AttributeCondition("seats", "eq", 3),
            AttributeCondition("role", "in", ("admin", "owner")),
        )
    )
    assert evaluate(
        cond, facts(attributes={"tenant_id": "acme-corp", "seats": 3.0, "role": "owner"})
    )
    assert not evaluate(
        cond, facts(attributes={"tenant_id": "acme-corp", "seats": "3", "role": "owner"})
    )


def test_a_dict_is_a_tree_only_with_a_tree_key() -> None:
    assert isinstance(parse_filter({"all": []}), AllOf)
    assert isinstance(parse_filter({"any": []}), AnyOf)
    # Another key next to "all" makes it the object form: "all" is then an attribute.
    with pytest.raises(FilterError) as caught:
        parse_filter({"all": [{"attr": "a", "op": "exists"}], "plan": "pro"})
    assert caught.value.path == "all[0]"
    assert parse_filter({"attr": "plan", "op": "exists"}) == AttributeCondition("plan", "exists")


def test_object_form_rejects_null() -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter({"plan": None})
    assert caught.value.path == "plan"


def test_a_top_level_list_is_all() -> None:
    assert parse_filter([{"plan": "pro"}, "x" and {"attr": "a", "op": "exists"}]) == AllOf(
        (AllOf((AttributeCondition("plan", "eq", "pro"),)), AttributeCondition("a", "exists"))
    )


# --- tree validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (
            {
                "all": [
                    {"attr": "a", "op": "eq", "value": 1},
                    {"any": [{"attr": "b", "op": "bogus"}]},
                ]
            },
            "all[1].any[0].op",
        ),
        ({"not": {"attr": "a", "op": "gt", "value": "10"}}, "not.value"),
        ({"attr": "a", "op": "between", "value": [3, 1]}, "value"),
        ({"attr": "a", "op": "in", "value": [1, [2]]}, "value[1]"),
        ({"attr": "a", "op": "eq", "value": [1]}, "value"),
        ({"attr": "a", "op": "exists", "value": 1}, "value"),
        ({"attr": "a", "op": "before", "value": "2026-02-30"}, "value"),
        ({"attr": "a", "op": "withinLast", "value": "7 days"}, "value"),
        ({"attr": "a", "op": "eq", "value": float("nan")}, "value"),
        ({"attr": "a", "op": "eq", "value": 2**60}, "value"),
        ({"attr": "a b", "op": "exists"}, "attr"),
        ({"attr": "a", "op": "eq", "value": 1, "extra": 1}, ""),
        ({"attr": "email", "op": "gt", "value": 1}, "op"),
        ({"attr": "email", "op": "eq", "value": 1}, "value"),
        ({"attr": "createdAt", "op": "eq", "value": "2026-01-01"}, "op"),
        ({"event": "buy", "op": "notPerformed", "count": {"gte": 1}}, "count"),
        ({"event": "buy", "op": "performed", "count": {"gte": -1}}, "count.gte"),
        ({"event": "buy", "op": "performed", "count": {"most": 1}}, "count.most"),
        ({"event": "buy", "op": "performed", "within": "0d"}, "within"),
        ({"event": "buy", "op": "performed", "where": {"event": "x", "op": "performed"}}, "where"),
        ({"audience": "", "op": "in"}, "audience"),
        ({"audience": "vip", "op": "out"}, "op"),
        ({"channel": "fax", "op": "reachable"}, "channel"),
        ({"attr": "a", "op": "eq", "value": "x" * 1001}, "value"),
    ],
)
def test_validation_errors_name_the_node(raw: Any, path: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(raw)
    assert caught.value.path == path


def test_depth_is_bounded() -> None:
    raw: Any = {"attr": "a", "op": "exists"}
    for _ in range(9):
        raw = {"not": raw}
    parse_filter(raw)
    with pytest.raises(FilterError, match="nesting"):
        parse_filter({"not": raw})


def test_size_is_bounded() -> None:
    leaf = {"attr": "a", "op": "exists"}
    parse_filter({"all": [leaf] * 199})
    with pytest.raises(FilterError, match="200") as caught:
        parse_filter({"all": [leaf] * 200})
    assert caught.value.path == "all[199]"
    with pytest.raises(FilterError, match="200"):
        parse_filter(",".join(["a:b"] * 200))


def test_lists_are_bounded() -> None:
    parse_filter({"attr": "a", "op": "in", "value": list(range(1000))})
    with pytest.raises(FilterError, match="1000"):
        parse_filter({"attr": "a", "op": "in", "value": list(range(1001))})


# --- serialising ---------------------------------------------------------------------------

ROUND_TRIPS: list[Any] = [
    'plan:pro,role:admin|owner,title:"VP, Sales"',
    {"tenant_id": "acme", "seats": [1, 2.5]},
    {
        "all": [
            {"attr": "score", "op": "between", "value": [1, 9.5]},
            {"any": [{"attr": "d", "op": "after", "value": "2026-01-01"}, {"not": {"plan": True}}]},
            {
                "event": "purchase",
                "op": "performed",
                "count": {"gte": 2, "lt": 5},
                "within": "30d",
                "where": {"attr": "sku", "op": "startsWith", "value": "A-"},
            },
            {"event": "login", "op": "notPerformed", "within": "2w"},
            {"audience": 12, "op": "notIn"},
            {"channel": "push", "op": "reachable"},
        ]
    },
]


@pytest.mark.parametrize("raw", ROUND_TRIPS)
def test_to_json_round_trips(raw: Any) -> None:
    cond = parse_filter(raw)
    assert parse_filter(to_json(cond)) == cond
    assert to_json(parse_filter(to_json(cond))) == to_json(cond)


def test_to_json_is_normalized() -> None:
    assert to_json(parse_filter({"event": "buy", "op": "performed"})) == {
        "event": "buy",
        "op": "performed",
        "count": {"gte": 1},
    }
    assert to_json(parse_filter({"audience": 12, "op": "in"})) == {"audience": "12", "op": "in"}
    assert to_json(parse_filter("a:1")) == {"all": [{"attr": "a", "op": "textEq", "value": "1"}]}


def test_to_string_form() -> None:
    raw = 'plan:pro,role:admin|owner,title:"VP, Sales",q:"say \\"hi\\"",e:""'
    cond = parse_filter(raw)
    assert to_string_form(cond) == raw
    assert parse_filter(to_string_form(cond) or "") == cond
    assert to_string_form(text("a", " x")) == 'a:" x"'
    assert to_string_form(parse_filter({"plan": "pro"})) is None
    assert to_string_form(Not(text("a", "b"))) is None
    assert to_string_form(AllOf(())) == ""


# --- evaluating: attributes ----------------------------------------------------------------


def test_typed_equality() -> None:
    eq10 = {"attr": "n", "op": "eq", "value": 10}
    assert matches(eq10, attributes={"n": 10})
    assert matches(eq10, attributes={"n": 10.0})
    assert not matches(eq10, attributes={"n": "10"})
    assert not matches({"attr": "n", "op": "eq", "value": 1}, attributes={"n": True})
    assert not matches({"attr": "n", "op": "eq", "value": True}, attributes={"n": 1})
    assert not matches({"attr": "n", "op": "eq", "value": "a"}, attributes={"n": ["a"]})
    assert matches({"attr": "n", "op": "in", "value": ["x", 10]}, attributes={"n": 10})
    assert matches({"attr": "n", "op": "nin", "value": ["x", 10]}, attributes={"n": "10"})


@pytest.mark.parametrize("op", ["eq", "neq", "in", "nin", "gt", "contains", "exists"])
def test_a_missing_attribute_matches_only_not_exists(op: str) -> None:
    value = {"in": [1], "nin": [1], "exists": None}.get(op, 1)
    leaf: dict[str, Any] = {"attr": "n", "op": op}
    if value is not None:
        leaf["value"] = value
    for attributes in ({}, {"n": None}):
        assert not matches(leaf, attributes=attributes)
        assert matches({"not": leaf}, attributes=attributes)
    assert matches({"attr": "n", "op": "notExists"}, attributes={"n": None})


def test_numbers() -> None:
    assert matches({"attr": "n", "op": "gte", "value": 10}, attributes={"n": 10.0})
    assert matches({"attr": "n", "op": "lt", "value": 10}, attributes={"n": 9.5})
    assert not matches({"attr": "n", "op": "gt", "value": 1}, attributes={"n": "5"})
    assert not matches({"attr": "n", "op": "gt", "value": 0}, attributes={"n": True})
    between = {"attr": "n", "op": "between", "value": [1, 3]}
    assert matches(between, attributes={"n": 1}) and matches(between, attributes={"n": 3})
    assert not matches(between, attributes={"n": 3.01})


def test_contains_and_starts_with() -> None:
    assert matches({"attr": "s", "op": "contains", "value": "cme"}, attributes={"s": "Acme"})
    assert not matches({"attr": "s", "op": "contains", "value": "acme"}, attributes={"s": "Acme"})
    assert matches({"attr": "s", "op": "contains", "value": 2}, attributes={"s": [1, 2.0]})
    assert not matches({"attr": "s", "op": "contains", "value": "a"}, attributes={"s": ["abc"]})
    assert not matches({"attr": "s", "op": "contains", "value": 1}, attributes={"s": 1})
    assert matches({"attr": "s", "op": "startsWith", "value": "Ac"}, attributes={"s": "Acme"})
    assert matches({"attr": "email", "op": "contains", "value": "@x."}, email="a@x.io")


def test_dates() -> None:
    before = {"attr": "d", "op": "before", "value": "2026-01-10"}
    assert matches(before, attributes={"d": "2026-01-09T23:59:59Z"})
    assert matches(before, attributes={"d": "2026-01-10T00:30:00+01:00"})
    assert not matches(before, attributes={"d": "2026-01-10"})
    assert not matches(before, attributes={"d": "yesterday"})
    assert not matches(before, attributes={"d": 20260101})
    assert matches(
        {"attr": "d", "op": "after", "value": "2026-01-10T00:00:00Z"},
        attributes={"d": "2026-01-10 00:00:00.000001"},
    )
    within = {"attr": "d", "op": "withinLast", "value": "7d"}
    assert matches(within, attributes={"d": "2026-01-08T12:00:00Z"})
    assert not matches(within, attributes={"d": "2026-01-08T11:59:59Z"})
    assert not matches(within, attributes={"d": "2026-01-16"})  # the future
    more = {"attr": "d", "op": "moreThan", "value": "30d"}
    assert matches(more, attributes={"d": "2025-12-01"})
    assert not matches(more, attributes={"d": "2025-12-16T12:00:00Z"})
    assert matches(
        {"attr": "createdAt", "op": "withinLast", "value": "1h"},
        created_at=NOW - timedelta(minutes=5),
    )
    assert not matches({"attr": "lastSeenAt", "op": "before", "value": "2030-01-01"})
    assert matches({"attr": "lastSeenAt", "op": "notExists"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2024-02-29T23:00:00-01:00", datetime(2024, 3, 1, tzinfo=UTC)),
        ("2026-01-31 10:00:00.1234567", datetime(2026, 1, 31, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-01-31T10:00:00Z", datetime(2026, 1, 31, 10, tzinfo=UTC)),
        ("2025-02-29", None),
        ("2026-01-31T24:00:00", None),
        ("2026-01-31T10:00", None),
        ("2026-01-31T10:00:00+05", None),
        ("2026-01-31\n", None),
        ("０２０２-01-01", None),
        ("0001-01-01T00:00:00+00:01", None),
        ("2459000.5", None),
    ],
)
def test_timestamps(value: str, expected: datetime | None) -> None:
    assert parse_timestamp(value) == expected


def test_durations() -> None:
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    for bad in ("7", "d", "7D", "1.5h", "0s", "99999w", " 7d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --- evaluating: events, audiences, channels ------------------------------------------------


def event(name: str, age: timedelta, **properties: Any) -> EventFact:
    return EventFact(name=name, timestamp=NOW - age, properties=properties)


def test_event_counts_windows_and_where() -> None:
    history = [
        event("purchase", timedelta(days=1), amount=30),
        event("purchase", timedelta(days=10), amount=5),
        event("purchase", timedelta(days=40), amount=50),
        event("login", timedelta(hours=1)),
    ]
    assert matches({"event": "purchase", "op": "performed", "count": {"eq": 3}}, events=history)
    assert matches(
        {"event": "purchase", "op": "performed", "count": {"gte": 2}, "within": "30d"},
        events=history,
    )
    assert not matches(
        {"event": "purchase", "op": "performed", "count": {"gte": 2}, "within": "7d"},
        events=history,
    )
    big = {"attr": "amount", "op": "gte", "value": 30}
    assert matches(
        {"event": "purchase", "op": "performed", "count": {"eq": 2}, "where": big}, events=history
    )
    assert matches(
        {"event": "purchase", "op": "notPerformed", "within": "7d", "where": {"amount": 5}},
        events=history,
    )
    assert matches({"event": "signup", "op": "notPerformed"}, events=history)
    assert matches({"event": "signup", "op": "performed", "count": {"lt": 1}}, events=history)
    future = [event("login", timedelta(hours=-1))]
    assert not matches({"event": "login", "op": "performed", "within": "1d"}, events=future)
    assert matches({"event": "login", "op": "performed"}, events=future)


def test_event_where_names_are_properties() -> None:
    history = [event("signup", timedelta(days=1), email="x@y.io")]
    cond = {
        "event": "signup",
        "op": "performed",
        "where": {"attr": "email", "op": "gt", "value": 1},
    }
    parse_filter(cond)  # gt is fine on a property named email
    assert matches(
        {"event": "signup", "op": "performed", "where": {"email": "x@y.io"}}, events=history
    )


def test_required_event_names() -> None:
    cond = parse_filter(
        {"any": [{"event": "a", "op": "performed"}, {"not": {"event": "b", "op": "notPerformed"}}]}
    )
    assert required_event_names(cond) == {"a", "b"}


def test_audiences() -> None:
    member = frozenset({"12", "vip"})
    assert matches({"audience": "vip", "op": "in"}, audiences=member)
    assert matches({"audience": 12, "op": "in"}, audiences=member)
    assert matches({"audience": "beta", "op": "notIn"}, audiences=member)
    assert not matches({"audience": "vip", "op": "notIn"}, audiences=member)


def test_reachability() -> None:
    assert matches({"channel": "email", "op": "reachable"}, email="a@x.io")
    assert not matches({"channel": "email", "op": "reachable"}, email="")
    assert matches({"channel": "sms", "op": "reachable"}, phone="+15550001")
    assert not matches({"channel": "inapp", "op": "reachable"})
    assert matches({"channel": "inapp", "op": "reachable"}, user_id="u1")
    assert matches({"channel": "push", "op": "reachable"}, has_push=True)
    assert parse_filter({"channel": "push", "op": "reachable"}) == ChannelCondition("push")


def test_empty_groups() -> None:
    assert matches({"all": []})
    assert not matches({"any": []})


def test_leaf_types() -> None:
    assert isinstance(parse_filter({"event": "x", "op": "performed"}), EventCondition)
    assert parse_filter({"audience": "vip", "op": "in"}) == AudienceCondition("vip", "in")
