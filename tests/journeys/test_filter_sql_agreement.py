"""Generated filters select the same users in SQL as `journeys.filters.evaluate` accepts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, Table, Text, insert, literal, select
from sqlalchemy import cast as sql_cast

from app.models.audience import Audience, AudienceMember
from app.models.project import Project
from app.segment_sql import compile_filter, epoch_us_sql, events, users
from journeys.filters import (
    ATTRIBUTE_OPS,
    STRING_FIELDS,
    TIMESTAMP_FIELDS,
    Condition,
    EventFact,
    UserFacts,
    evaluate,
    parse_filter,
    to_json,
)
from journeys.timestamps import epoch_microseconds, parse_timestamp
from workers.channels import reachability_clauses, reachable_channels

projects = cast(Table, Project.__table__)
audiences = cast(Table, Audience.__table__)
members = cast(Table, AudienceMember.__table__)

NOW = datetime(2026, 1, 15, 12, 0, 0, 250_000, tzinfo=UTC)
PROJECT = 1
OTHER_PROJECT = 2
# (id, project, name): "2" is a name that spells another audience's id; project 2 reuses "vip".
AUDIENCES = [
    (1, PROJECT, "vip"),
    (2, PROJECT, "beta"),
    (3, PROJECT, "2"),
    (4, OTHER_PROJECT, "vip"),
]
AUDIENCE_REFS = ["vip", "beta", "2", "1", "3", "4", "02", "99", "VIP"]

TIMESTAMP_TEXTS = [
    "2026-01-10",
    "2026-01-15",
    "2026-01-08T12:00:00.250Z",  # exactly NOW - 7d
    "2026-01-08T12:00:00.249999Z",
    "2026-01-15T12:00:00.25",  # exactly NOW, naive
    "2026-01-15T14:00:00.250+02:00",  # NOW again, with an offset
    "2026-01-16T00:00:00+02:00",
    "2025-12-31T23:30:00-02:00",
    "2026-01-14 09:30:00",
    "2025-12-16T12:00:00.250000Z",  # NOW - 30d
]
STRINGS = [
    "",
    "pro",
    "Pro",
    "pro plan",
    " pro",
    "3",
    "3.0",
    "10",
    "-2",
    "true",
    "a,b",
    "é",
    "2026-02-30",
    "12345.5",
    "2026-01-15T12:00:00+24:00",
    *TIMESTAMP_TEXTS[:6],
]
NUMBERS = [0, 1, 3, 3.0, 10, 10.5, -2, 2.5, 0.1]
SCALARS = [*STRINGS, *NUMBERS, True, False]
DURATIONS = ["1s", "90m", "1h", "7d", "2w", "30d"]
AGES = [
    timedelta(0),
    timedelta(seconds=1),
    timedelta(hours=1),
    timedelta(days=6, hours=23),
    timedelta(days=7),
    timedelta(days=7, microseconds=1),
    timedelta(days=29),
    timedelta(days=30),
    timedelta(days=400),
    timedelta(hours=-1),  # in the future
]
USER_KEYS = ["plan", "score", "tags", "signup", "flag"]
EVENT_NAMES = ["purchase", "login", "view"]
PROPERTY_KEYS = ["amount", "sku", "plan", "at"]
STRING_OPS = [op for op, spec in ATTRIBUTE_OPS.items() if spec.string_fields]
TIMESTAMP_OPS = [op for op, spec in ATTRIBUTE_OPS.items() if spec.timestamp_fields]

scalars = st.sampled_from(SCALARS)
json_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.just({"a": 1}),
    st.none(),  # stored as JSON null: missing, like an absent key
)


# --- filters ---------------------------------------------------------------------------


def _op_value(draw: st.DrawFn, op: str, strings_only: bool) -> Any:
    kind = ATTRIBUTE_OPS[op].kind
    scalar = st.sampled_from(STRINGS) if strings_only else scalars
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(scalar)
    if kind == "scalars":
        return draw(st.lists(scalar, max_size=3))
    if kind in ("text", "string"):
        return draw(st.sampled_from(STRINGS))
    if kind == "texts":
        return draw(st.lists(st.sampled_from(STRINGS), max_size=3))
    if kind == "number":
        return draw(st.sampled_from(NUMBERS))
    if kind == "range":
        return sorted(draw(st.lists(st.sampled_from(NUMBERS), min_size=2, max_size=2)))
    if kind == "timestamp":
        return draw(st.sampled_from(TIMESTAMP_TEXTS))
    return draw(st.sampled_from(DURATIONS))


@st.composite
def attribute_leaves(draw: st.DrawFn, in_event: bool = False) -> dict[str, Any]:
    if in_event:
        name = draw(st.sampled_from(PROPERTY_KEYS))
    else:
        name = draw(st.sampled_from([*USER_KEYS, *STRING_FIELDS, *TIMESTAMP_FIELDS]))
    if not in_event and name in TIMESTAMP_FIELDS:
        op = draw(st.sampled_from(TIMESTAMP_OPS))
    elif not in_event and name in STRING_FIELDS:
        op = draw(st.sampled_from(STRING_OPS))
    else:
        op = draw(st.sampled_from(list(ATTRIBUTE_OPS)))
    node: dict[str, Any] = {"attr": name, "op": op}
    value = _op_value(draw, op, strings_only=not in_event and name in STRING_FIELDS)
    if value is not None:
        node["value"] = value
    return node


def _trees(leaves: st.SearchStrategy[Any], max_leaves: int) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.builds(lambda c: {"all": c}, st.lists(children, max_size=3)),
            st.builds(lambda c: {"any": c}, st.lists(children, max_size=3)),
            st.builds(lambda c: {"not": c}, children),
        ),
        max_leaves=max_leaves,
    )


@st.composite
def event_leaves(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {
        "event": draw(st.sampled_from(EVENT_NAMES)),
        "op": draw(st.sampled_from(["performed", "notPerformed"])),
    }
    if node["op"] == "performed" and draw(st.booleans()):
        node["count"] = draw(
            st.sampled_from(
                [{"gte": 1}, {"gte": 2}, {"eq": 0}, {"eq": 1}, {"lt": 2}, {"gte": 1, "lte": 2}]
            )
        )
    if draw(st.booleans()):
        node["within"] = draw(st.sampled_from(DURATIONS))
    if draw(st.booleans()):
        node["where"] = draw(_trees(attribute_leaves(in_event=True), max_leaves=3))
    return node


leaves = st.one_of(
    attribute_leaves(),
    attribute_leaves(),
    event_leaves(),
    st.builds(
        lambda ref, op: {"audience": ref, "op": op},
        st.sampled_from(AUDIENCE_REFS),
        st.sampled_from(["in", "notIn"]),
    ),
    st.builds(
        lambda channel: {"channel": channel, "op": "reachable"},
        st.sampled_from(["email", "sms", "push", "inapp"]),
    ),
)
conditions = _trees(leaves, max_leaves=8).map(parse_filter)


# --- populations -----------------------------------------------------------------------


@dataclass
class Person:
    id: int
    row: dict[str, Any]
    has_push: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    memberships: list[dict[str, Any]] = field(default_factory=list)

    def facts(self) -> UserFacts:
        current = set()
        for membership in self.memberships:
            expires = membership["expires_at"]
            if membership["project_id"] != PROJECT or membership["left_at"] is not None:
                continue
            if expires is None or expires > NOW:
                audience_id = membership["audience_id"]
                current |= {str(audience_id), AUDIENCES[audience_id - 1][2]}
        return UserFacts(
            now=NOW,
            user_id=self.row["external_id"],
            email=self.row["email"],
            phone=self.row["phone"],
            language=self.row["language"],
            timezone=self.row["timezone"],
            created_at=self.row["created_at"],
            last_seen_at=self.row["last_seen_at"],
            attributes=self.row["attributes"],
            audiences=frozenset(current),
            # The registry decides reachability on both sides; push devices are the test's.
            reachable=reachable_channels(
                SimpleNamespace(
                    id=self.id,
                    external_id=self.row["external_id"],
                    email=self.row["email"],
                    phone=self.row["phone"],
                )
            )
            | ({"push"} if self.has_push else frozenset()),
            events=[
                EventFact(name=e["name"], timestamp=e["timestamp"], properties=e["properties"])
                for e in self.events
                if e["project_id"] == PROJECT and not e["erased"]
            ],
        )


moments = st.sampled_from(AGES).map(lambda age: NOW - age)


@st.composite
def people(draw: st.DrawFn, user_id: int) -> Person:
    attributes = {}
    for key in draw(st.lists(st.sampled_from(USER_KEYS), unique=True)):
        attributes[key] = draw(json_values)
    row = {
        "id": user_id,
        "project_id": PROJECT,
        # Unique per project; only one user may hold the empty one.
        "external_id": draw(
            st.sampled_from([None, f"u-{user_id}", str(user_id), *([""] if user_id == 1 else [])])
        ),
        "email": draw(st.sampled_from([None, "", "a@x.io", "pro"])),
        "phone": draw(st.sampled_from([None, "", "+15550001"])),
        "language": draw(st.sampled_from([None, "en", "pro"])),
        "timezone": draw(st.sampled_from([None, "Europe/Paris"])),
        "attributes": attributes,
        "created_at": draw(moments),
        "last_seen_at": draw(st.none() | moments),
    }
    person = Person(user_id, row, has_push=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 5))):
        properties = {}
        for key in draw(st.lists(st.sampled_from(PROPERTY_KEYS), unique=True, max_size=3)):
            properties[key] = draw(json_values)
        person.events.append(
            {
                "project_id": draw(st.sampled_from([PROJECT] * 5 + [OTHER_PROJECT])),
                "user_id": user_id,
                "name": draw(st.sampled_from(EVENT_NAMES)),
                "properties": properties,
                "timestamp": draw(moments),
                "erased": draw(st.sampled_from([False] * 4 + [True])),
            }
        )
    for audience_id, project_id, _name in AUDIENCES:
        if draw(st.booleans()):
            person.memberships.append(
                {
                    "project_id": project_id,
                    "audience_id": audience_id,
                    "user_id": user_id,
                    "expires_at": draw(st.none() | moments),
                    "left_at": draw(st.sampled_from([None, None, NOW - timedelta(days=1)])),
                }
            )
    return person


@st.composite
def populations(draw: st.DrawFn) -> list[Person]:
    return [draw(people(user_id)) for user_id in range(1, draw(st.integers(1, 6)) + 1)]


# --- the property --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(filter_db: Engine) -> Engine:
    with filter_db.begin() as conn:
        conn.execute(
            insert(projects),
            [{"id": pid, "name": f"p{pid}", "identity_secret": "s"} for pid in (1, 2)],
        )
        conn.execute(
            insert(audiences),
            [{"id": aid, "project_id": pid, "name": name} for aid, pid, name in AUDIENCES],
        )
    return filter_db


def _insert(conn: Connection, population: list[Person]) -> None:
    conn.execute(insert(users), [person.row for person in population])
    rows = [event for person in population for event in person.events]
    if rows:
        conn.execute(insert(events), rows)
    rows = [membership for person in population for membership in person.memberships]
    if rows:
        conn.execute(insert(members), rows)


def _selected(conn: Connection, cond: Condition, population: list[Person]) -> set[int]:
    push = [person.id for person in population if person.has_push]
    clause = compile_filter(
        cond,
        project_id=PROJECT,
        dialect_name=conn.dialect.name,
        now=NOW,
        # The population's push devices stand in for the (not yet existing) subscriptions.
        channel_clauses={**reachability_clauses(), "push": lambda _table: users.c.id.in_(push)},
    )
    query = select(users.c.id).where(users.c.project_id == PROJECT, clause)
    return set(conn.execute(query).scalars())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(population=populations(), filters=st.lists(conditions, min_size=1, max_size=4))
def test_sql_selects_what_python_accepts(
    db: Engine, population: list[Person], filters: list[Condition]
) -> None:
    with db.connect() as conn:
        transaction = conn.begin()
        try:
            _insert(conn, population)
            for cond in filters:
                note(json.dumps(to_json(cond)))
                assert parse_filter(to_json(cond)) == cond
                expected = {p.id for p in population if evaluate(cond, p.facts())}
                assert _selected(conn, cond, population) == expected
        finally:
            transaction.rollback()


def test_examples_agree(db: Engine) -> None:
    """A few hand-written cases on both databases, readable when the property fails."""
    person = Person(
        1,
        {
            "id": 1,
            "project_id": PROJECT,
            "external_id": "u-1",
            "email": "a@x.io",
            "phone": None,
            "language": "en",
            "timezone": None,
            "attributes": {
                "plan": "pro",
                "score": 3.0,
                "tags": ["a", 2, True],
                "signup": "2026-01-10T08:00:00+01:00",
                "flag": None,
            },
            "created_at": NOW - timedelta(days=3),
            "last_seen_at": None,
        },
        has_push=False,
        events=[
            {
                "project_id": PROJECT,
                "user_id": 1,
                "name": "purchase",
                "properties": {"amount": 30, "sku": "A-1"},
                "timestamp": NOW - timedelta(days=2),
                "erased": False,
            }
        ],
    )
    cases: list[tuple[Any, bool]] = [
        ("plan:pro,score:3", True),
        ("score:3.0", True),
        ("score:3.00", True),
        ("tags:a", False),
        ({"attr": "tags", "op": "contains", "value": 2}, True),
        ({"attr": "tags", "op": "contains", "value": "2"}, False),
        ({"attr": "tags", "op": "contains", "value": 1}, False),  # true is not 1
        ({"attr": "tags", "op": "contains", "value": True}, True),
        ({"attr": "score", "op": "eq", "value": "3"}, False),
        ({"attr": "flag", "op": "notExists"}, True),
        ({"attr": "flag", "op": "neq", "value": 1}, False),
        ({"attr": "signup", "op": "before", "value": "2026-01-10T07:00:00.000001Z"}, True),
        ({"attr": "signup", "op": "before", "value": "2026-01-10T07:00:00Z"}, False),
        ({"attr": "createdAt", "op": "withinLast", "value": "7d"}, True),
        ({"event": "purchase", "op": "performed", "where": {"amount": 30}}, True),
        ({"event": "purchase", "op": "performed", "count": {"gte": 2}}, False),
        ({"channel": "email", "op": "reachable"}, True),
        ({"channel": "sms", "op": "reachable"}, False),
    ]
    with db.connect() as conn:
        transaction = conn.begin()
        try:
            _insert(conn, [person])
            for raw, matches in cases:
                cond = parse_filter(raw)
                assert evaluate(cond, person.facts()) is matches, raw
                assert _selected(conn, cond, [person]) == ({1} if matches else set()), raw
        finally:
            transaction.rollback()


# --- timestamps ----------------------------------------------------------------------------

timestamp_texts = st.one_of(
    st.builds(
        "{}-{}-{}{}".format,
        st.sampled_from(["0000", "0001", "1969", "1970", "2000", "2024", "2100", "9999"]),
        st.sampled_from(["00", "01", "02", "04", "12", "13"]),
        st.sampled_from(["00", "01", "28", "29", "30", "31", "32"]),
        st.one_of(
            st.just(""),
            st.builds(
                "{}{}:{}:{}{}{}".format,
                st.sampled_from(["T", " ", "t"]),
                st.sampled_from(["00", "09", "23", "24"]),
                st.sampled_from(["00", "59", "60"]),
                st.sampled_from(["00", "59", "60"]),
                st.sampled_from(
                    ["", ".", ".5", ".123", ".123456", ".1234567", ".123456789", ".1234567890"]
                ),
                st.sampled_from(
                    [
                        "",
                        "Z",
                        "z",
                        "+00:00",
                        "-02:30",
                        "+23:59",
                        "+24:00",
                        "-00:60",
                        "+0530",
                        "+05:3",
                    ]
                ),
            ),
        ),
    ),
    st.text(alphabet="0123456789-:T Z+.", max_size=30),
)


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(timestamp_texts, min_size=1, max_size=20))
def test_sql_timestamps_parse_like_python(db: Engine, texts: list[str]) -> None:
    expected = []
    for value in texts:
        moment = parse_timestamp(value)
        expected.append(None if moment is None else epoch_microseconds(moment))
    with db.connect() as conn:
        dialect = conn.dialect.name
        columns = [
            epoch_us_sql(sql_cast(literal(value), Text), dialect, users).label(f"t{i}")
            for i, value in enumerate(texts)
        ]
        row = conn.execute(select(*columns)).one()
    assert dict(zip(texts, row, strict=True)) == dict(zip(texts, expected, strict=True))


# --- numbers and typed equality, exhaustively over awkward stored values --------------------

AWKWARD_VALUES: list[Any] = [
    None,
    [],
    [150],
    [1, 2],
    {},
    {"a": 1},
    True,
    False,
    "150",
    "pro",
    "",
    0,
    -0.0,
    0.1,
    0.30000000000000004,
    1,
    100,
    150,
    300,
    300.5,
    2**53,
    2**53 + 1,
    -(2**53),
    -(2**53) - 1,
    1e16,
    1e300,
]
NUMBER_BOUNDS: list[Any] = [0, 0.1, 0.30000000000000004, 1, 100, 300, 2**53, -(2**53), 1e16, 1.5]
AWKWARD_FILTERS: list[dict[str, Any]] = [
    *(
        {"attr": "score", "op": op, "value": bound}
        for op in ("gt", "gte", "lt", "lte", "eq", "neq")
        for bound in NUMBER_BOUNDS
    ),
    *(
        {"attr": "score", "op": "between", "value": [low, high]}
        for low, high in [(100, 300), (0.1, 0.30000000000000004), (2**53, 2**53), (-(2**53), 2**53)]
    ),
    *({"attr": "score", "op": "eq", "value": v} for v in ["150", "pro", "", True, False]),
    *({"attr": "score", "op": "textEq", "value": v} for v in ["150", "1", "0", "true", "1.0"]),
    *({"attr": "score", "op": op} for op in ("exists", "notExists")),
    {"attr": "score", "op": "in", "value": [150, "pro", True]},
    {"attr": "score", "op": "nin", "value": [150, "pro", True]},
    {"attr": "score", "op": "contains", "value": 150},
    {"attr": "score", "op": "contains", "value": "p"},
    {"attr": "score", "op": "startsWith", "value": "1"},
    {"attr": "score", "op": "in", "value": [150, 300.5, 2**53, "150", "", True, False]},
    {
        "any": [
            {"attr": "score", "op": "eq", "value": 150},
            {"attr": "score", "op": "eq", "value": "pro"},
            {"attr": "score", "op": "in", "value": [0.1, "150", 1]},
            {"attr": "score", "op": "eq", "value": False},
            {"attr": "score", "op": "gt", "value": 1e16},
        ]
    },
    {"any": [{"attr": "score", "op": "eq", "value": v} for v in ["pro", "150", ""]]},
]


def test_awkward_values_agree(db: Engine) -> None:
    """Every stored JSON shape against every number / equality operator, and their negations."""
    population = []
    for i, value in enumerate(AWKWARD_VALUES, start=1):
        person = Person(i, {**_plain_row(i), "attributes": {"score": value}}, has_push=False)
        population.append(person)
    population.append(Person(len(population) + 1, _plain_row(len(population) + 1), False))
    with db.connect() as conn:
        transaction = conn.begin()
        try:
            _insert(conn, population)
            for raw in AWKWARD_FILTERS:
                for cond in (parse_filter(raw), parse_filter({"not": raw})):
                    expected = {p.id for p in population if evaluate(cond, p.facts())}
                    assert _selected(conn, cond, population) == expected, to_json(cond)
        finally:
            transaction.rollback()


def _plain_row(user_id: int) -> dict[str, Any]:
    return {
        "id": user_id,
        "project_id": PROJECT,
        "external_id": f"u-{user_id}",
        "email": None,
        "phone": None,
        "language": None,
        "timezone": None,
        "attributes": {},
        "created_at": NOW,
        "last_seen_at": None,
    }


AWKWARD_MOMENTS: list[Any] = [
    "2026-01-15",
    "2026-01-14T23:59:59.999999Z",
    "2026-01-16T00:00:00+23:59",  # 2026-01-15T00:01 UTC: local date a day after
    "2026-01-14T00:01:00-23:59",  # 2026-01-15T00:00 UTC: local date a day before
    "2026-01-15T12:00:00.25",  # NOW
    "2026-01-15 12:00:00.250001+00:00",
    "2026-02-30",
    "2026-01-15T12:00:00+24:00",
    "0001-01-01",
    "0001-01-01T10:00:00+11:00",  # before year 1 in UTC: invalid
    "0001-01-02T00:00:00+23:59",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:00:00-01:00",  # after year 9999 in UTC: invalid
    "9999-12-31T23:00:00+01:00",
    20260115,
    "20260115",
    ["2026-01-15"],
]
MOMENT_FILTERS: list[dict[str, Any]] = [
    *(
        {"attr": "signup", "op": op, "value": value}
        for op in ("before", "after")
        for value in [
            "2026-01-15",
            "2026-01-15T00:00:00.000001Z",
            "2026-01-14T23:59:59.999999Z",
            "2026-01-15T00:01:00Z",
            "0001-01-01",
            "0001-01-02",
            "9999-12-31",
            "9999-12-31T23:59:59.999999Z",
        ]
    ),
    *(
        {"attr": "signup", "op": op, "value": value}
        for op in ("withinLast", "moreThan")
        for value in ["1s", "12h", "1d", "2d", "30d"]
    ),
]


def test_awkward_moments_agree(db: Engine) -> None:
    """Date operators near the day, offset and calendar edges, and their negations."""
    population = [
        Person(i, {**_plain_row(i), "attributes": {"signup": value}}, has_push=False)
        for i, value in enumerate(AWKWARD_MOMENTS, start=1)
    ]
    with db.connect() as conn:
        transaction = conn.begin()
        try:
            _insert(conn, population)
            for raw in MOMENT_FILTERS:
                for cond in (parse_filter(raw), parse_filter({"not": raw})):
                    expected = {p.id for p in population if evaluate(cond, p.facts())}
                    assert _selected(conn, cond, population) == expected, to_json(cond)
        finally:
            transaction.rollback()
