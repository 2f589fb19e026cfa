"""Input that used to answer 500 or break a project: non-finite numbers, deep nesting, lone
surrogates, ids above 2^63. Each is a 4xx naming the field, and a batch keeps its good items."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.db import db
from app.models import Event, Segment, User

HUGE = 371637718278967721984  # above 2^63


def post_raw(api, path: str, body: str | bytes, **kwargs):
    return api.post(path, data=body, content_type="application/json", **kwargs)


def strict_json(response):
    """The body parsed the way browsers and other languages do: NaN is not JSON."""

    def refuse(token: str):
        raise AssertionError(f"invalid JSON token {token} in the answer")

    return json.loads(response.get_data(as_text=True), parse_constant=refuse)


# --- Defect 1: NaN and Infinity ------------------------------------------------------------


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize(
    ("path", "template", "field"),
    [
        ("/v1/users", '{"userId": "u", "attributes": {"score": %s}}', "attributes.score"),
        (
            "/v1/events",
            '{"name": "e", "userId": "u", "properties": {"x": [1, %s]}}',
            "properties.x[1]",
        ),
        ("/v1/identify", '{"userId": "u", "traits": {"score": %s}}', "traits.score"),
        ("/v1/track", '{"event": "e", "userId": "u", "properties": {"x": %s}}', "properties.x"),
        (
            "/v1/segments",
            '{"name": "s", "filter": {"attr": "a", "op": "gt", "value": %s}}',
            "filter.value",
        ),
        (
            "/v1/segments/preview",
            '{"filter": {"attr": "a", "op": "gt", "value": %s}}',
            "filter.value",
        ),
    ],
)
def test_non_finite_numbers_are_a_400_naming_the_field(api, path, template, field, token):
    r = post_raw(api, path, template % token)
    assert r.status_code == 400, r.json
    assert field in r.json["errors"], r.json
    assert r.json["errors"][field] == ["must be a finite number"]


def test_non_finite_numbers_never_reach_the_project(app, api):
    for body in (
        '{"userId": "u", "attributes": {"x": NaN}}',
        '{"userId": "u", "attributes": {"x": 1e400}}',
    ):
        assert post_raw(api, "/v1/users", body).status_code == 400
    assert api.get("/v1/users/u").status_code == 404
    r = api.post("/v1/segments/preview", json={"filter": {"attr": "x", "op": "gte", "value": 0}})
    assert r.status_code == 200 and r.json["count"] == 0


def _store_raw(app, statement: str, **params) -> None:
    """Write a value the way an earlier version could have: straight into the database."""
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_a_stored_nan_does_not_take_the_segments_down(app, api, database_url):
    api.post(
        "/v1/users",
        json=[
            {"userId": "ann", "attributes": {"plan": "pro", "score": 5}},
            {"userId": "old", "attributes": {"plan": "pro"}},
        ],
    )
    api.post(
        "/v1/events",
        json=[
            {"name": "buy", "userId": "ann", "properties": {"amount": 30}},
            {"name": "buy", "userId": "old", "properties": {"amount": 40}},
        ],
    )
    bad_user = '{"plan": "pro", "score": NaN, "cap": Infinity}'
    bad_event = '{"amount": NaN}'
    if database_url.startswith("postgresql"):
        # PostgreSQL cannot hold the value at all, in JSONB or in json text.
        for statement in (
            "UPDATE users SET attributes = CAST(:doc AS jsonb) WHERE external_id = 'old'",
            "SELECT CAST(:doc AS json)",
        ):
            with pytest.raises(DBAPIError, match=r"(?i)invalid"):
                _store_raw(app, statement, doc=bad_user)
        return
    _store_raw(app, "UPDATE users SET attributes = :doc WHERE external_id = 'old'", doc=bad_user)
    _store_raw(
        app,
        "UPDATE events SET properties = :doc WHERE user_id ="
        " (SELECT id FROM users WHERE external_id = 'old')",
        doc=bad_event,
    )
    filters = [
        {"attr": "plan", "op": "eq", "value": "pro"},
        {"attr": "score", "op": "gte", "value": 1},
        {"attr": "plan", "op": "exists"},
        {"event": "buy", "op": "performed", "where": {"amount": 30}},
        {"event": "buy", "op": "performed", "where": {"attr": "amount", "op": "gt", "value": 1}},
    ]
    for filter in filters:
        r = api.post("/v1/segments/preview", json={"filter": filter})
        # The unreadable document reads as empty: the project's other users still match.
        assert r.status_code == 200, (filter, r.json)
        assert r.json["sample"] == ["ann"], (filter, r.json)
    created = api.post("/v1/segments", json={"name": "pros", "filter": filters[0]})
    assert created.status_code == 201
    r = api.get("/v1/segments/pros/users")
    assert r.status_code == 200 and [u["userId"] for u in r.json["data"]] == ["ann"]
    r = api.get("/v1/users?segment=plan:pro")
    assert r.status_code == 200 and [u["userId"] for u in r.json["data"]] == ["ann"]
    # The profile itself still answers, as valid JSON: the non-finite numbers read as null.
    r = api.get("/v1/users/old")
    assert r.status_code == 200
    assert strict_json(r)["attributes"] == {"plan": "pro", "score": None, "cap": None}
    assert strict_json(api.get("/v1/users"))["data"][1]["userId"] == "old"


# --- Defect 2: deep nesting --------------------------------------------------------------

JSON_ENDPOINTS = [
    "/v1/users",
    "/v1/events",
    "/v1/identify",
    "/v1/track",
    "/v1/alias",
    "/v1/batch",
    "/v1/users/delete",
    "/v1/auth/token",
    "/v1/segments",
    "/v1/segments/preview",
    "/v1/audiences",
    "/v1/templates",
    "/v1/notify",
    "/v1/notify/batch",
    "/v1/messages",
    "/v1/messages/sms",
]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("shape", ["array", "object"])
def test_deeply_nested_json_is_a_400_on_every_endpoint(api, path, shape):
    depth = 1000
    if shape == "array":
        body = "[" * depth + "]" * depth
    else:
        body = (
            '{"userId": "u", "name": "e", "properties": '
            + '{"a": ' * depth
            + "1"
            + "}" * depth
            + "}"
        )
    r = post_raw(api, path, body)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["errors"] == {"body": ["nested deeper than 64 levels"]}


def _nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def test_values_nest_at_most_32_levels(api):
    ok = api.post("/v1/users", json={"userId": "deep", "attributes": {"x": _nested(31)}})
    assert ok.status_code == 200, ok.json
    r = api.post("/v1/users", json={"userId": "deeper", "attributes": {"x": _nested(40)}})
    assert r.status_code == 400
    [(field, reason)] = r.json["errors"].items()
    assert field.startswith("attributes.x.a.a") and reason == ["nested deeper than 32 levels"]
    r = api.post("/v1/events", json={"name": "e", "properties": {"x": [_nested(35)]}})
    assert r.status_code == 400 and next(iter(r.json["errors"])).startswith("properties.x[0]")


def test_brackets_inside_strings_do_not_count_as_nesting(api):
    tricky = "[" * 200 + '\\"' + "{" * 100 + "\\\\"
    r = api.post("/v1/users", json={"userId": "t", "attributes": {"note": tricky, "x": [[["]"]]]}})
    assert r.status_code == 200, r.json
    assert api.get("/v1/users/t").json["attributes"]["note"] == tricky


# --- Defect 2: lone surrogates -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/users", r'{"userId": "a\ud800b"}', "userId"),
        ("/v1/users", r'{"userId": "u", "attributes": {"k\udfff": 1}}', "attributes.k\udfff"),
        ("/v1/events", r'{"name": "\ud800", "userId": "u"}', "name"),
        ("/v1/events", r'{"name": "e", "properties": {"k": ["\uDC00"]}}', "properties.k[0]"),
        ("/v1/track", r'{"event": "e", "userId": "\ud83d"}', "userId"),
        ("/v1/segments", r'{"name": "\ud800", "filter": "plan:pro"}', "name"),
        ("/v1/templates", r'{"name": "t\ud800", "channels": {}}', "name"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field(api, path, body, field):
    r = post_raw(api, path, body)
    assert r.status_code == 400, r.json
    assert r.json["errors"] == {field: ["contains a lone UTF-16 surrogate"]} or (
        r.json["errors"] == {field: ["name contains a lone UTF-16 surrogate"]}
    ), r.json


def test_surrogates_as_raw_utf8_bytes_are_refused_too(api):
    r = post_raw(api, "/v1/users", b'{"userId": "a\xed\xa0\x80b"}')
    assert r.status_code == 400 and "userId" in r.json["errors"]


def test_surrogate_pairs_are_ordinary_text(api):
    # Python's json.dumps escapes an emoji as a surrogate pair: that is one valid character.
    r = post_raw(api, "/v1/users", r'{"userId": "sm\ud83d\ude00le", "attributes": {"k": "\ud55c"}}')
    assert r.status_code == 200, r.json
    assert api.get("/v1/users/sm\U0001f600le").json["attributes"] == {"k": "\ud55c"}
    r = post_raw(api, "/v1/events", '{"name": "한국어", "userId": "u"}'.encode())
    assert r.status_code == 202


def test_a_query_segment_with_bad_json_names_the_field(api):
    for raw, field in (
        ("[" * 500 + "]" * 500, "segment"),
        ('{"attr": "x\\ud800", "op": "eq", "value": 1}', "segment.attr"),
        ('{"attr": "x", "op": "gt", "value": NaN}', "segment.value"),
    ):
        r = api.get("/v1/users", query_string={"segment": raw})
        assert r.status_code == 422 and field in r.json["errors"], r.json


# --- Defect 2: ids above 2^63 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("get", f"/v1/messages/{HUGE}", "message_id"),
        ("get", f"/v1/segments/{HUGE}", "id"),
        ("get", f"/v1/segments/{HUGE}/users", "id"),
        ("delete", f"/v1/segments/{HUGE}", "id"),
        ("get", f"/v1/templates/{HUGE}", "id"),
        ("get", f"/v1/audiences/{HUGE}", "id"),
        ("get", f"/v1/audiences/{HUGE}/members", "id"),
        ("get", f"/v1/users?segment={HUGE}", "segment"),
    ],
)
def test_ids_above_2_63_in_paths_are_a_400(api, method, path, field):
    r = getattr(api, method)(path)
    assert r.status_code == 400, r.json
    assert field in r.json["errors"], r.json


def test_a_real_id_still_works_next_to_the_bound(api):
    created = api.post("/v1/segments", json={"name": "pros", "filter": "plan:pro"}).json
    assert api.get(f"/v1/segments/{created['id']}").status_code == 200
    assert api.get(f"/v1/segments/{2**63 - 1}").status_code == 404
    assert api.get("/v1/messages/9223372036854775807").status_code == 404


@pytest.mark.parametrize("template", [HUGE, str(HUGE), -(2**63) - 1])
def test_a_template_id_above_2_63_names_the_field(api, template):
    r = api.post("/v1/messages", json={"userId": "u", "template": template})
    # 422 like every other bad field of a message; the answer names the field.
    assert r.status_code == 422, r.json
    assert r.json["errors"] == {"template": ["out of range: ids are at most 9223372036854775807"]}
    good = api.post(
        "/v1/templates",
        json={"name": "hi", "channels": {"inapp": {"en": {"title": "Hi", "body": "Hi"}}}},
    )
    assert good.status_code == 201, good.json
    r = api.post(
        "/v1/messages",
        json=[{"userId": "u", "template": template}, {"userId": "u", "template": good.json["id"]}],
    )
    assert r.status_code == 200, r.json
    bad, sent = r.json["data"]
    assert not bad["ok"] and "template" in bad["errors"]
    assert sent["ok"] and len(sent["messageIds"]) == 1


# --- Defect 2: a batch keeps its valid items ---------------------------------------------


def test_an_events_batch_keeps_its_good_events(app, api):
    deep = json.dumps(_nested(40))
    body = (
        '[{"name": "ok1", "userId": "u"},'
        ' {"name": "bad\\ud800", "userId": "u"},'
        ' {"name": "nan", "userId": "u", "properties": {"x": NaN}},'
        f' {{"name": "deep", "properties": {deep}}},'
        ' {"name": "ok2", "userId": "u"}]'
    )
    r = post_raw(api, "/v1/events", body)
    assert r.status_code == 202, r.json
    assert (r.json["accepted"], r.json["rejected"]) == (2, 3)
    assert r.json["errors"]["1"] == {"name": ["contains a lone UTF-16 surrogate"]}
    assert r.json["errors"]["2"] == {"properties.x": ["must be a finite number"]}
    assert list(r.json["errors"]["3"]) and next(iter(r.json["errors"]["3"])).startswith(
        "properties"
    )
    with app.app_context():
        assert sorted(db.session.scalars(select(Event.name))) == ["ok1", "ok2"]


def test_a_users_batch_keeps_its_good_profiles(app, api):
    body = (
        '[{"userId": "good1"}, {"userId": "bad\\udfff"},'
        ' {"userId": "nan", "attributes": {"x": -Infinity}},'
        ' {"userId": "good2", "attributes": {"x": 1.5}}]'
    )
    r = post_raw(api, "/v1/users", body)
    assert r.status_code == 200, r.json
    assert (r.json["created"], r.json["failed"]) == (2, 2)
    results = r.json["results"]
    assert [x["ok"] for x in results] == [True, False, False, True]
    assert results[1]["errors"] == {"userId": ["contains a lone UTF-16 surrogate"]}
    assert results[2]["errors"] == {"attributes.x": ["must be a finite number"]}
    with app.app_context():
        assert sorted(db.session.scalars(select(User.external_id))) == ["good1", "good2"]


def test_a_segment_batch_keeps_its_good_calls(app, api):
    body = (
        '{"batch": [{"type": "track", "event": "ok", "userId": "u"},'
        ' {"type": "track", "event": "bad", "userId": "u\\ud800"},'
        ' {"type": "identify", "userId": "v", "traits": {"n": NaN}}]}'
    )
    r = post_raw(api, "/v1/batch", body)
    assert r.status_code == 200, r.json
    assert r.json["errors"]["1"] == {"userId": ["contains a lone UTF-16 surrogate"]}
    assert r.json["errors"]["2"] == {"traits.n": ["must be a finite number"]}
    with app.app_context():
        assert list(db.session.scalars(select(Event.name))) == ["ok"]
        assert db.session.scalar(select(User.id).where(User.external_id == "v")) is None


def test_json_from_the_marshmallow_endpoints_is_checked_too(app, api):
    r = post_raw(api, "/v1/segments", '{"name": "s", "filter": "plan:pro", "x": NaN}')
    assert r.status_code == 400 and "x" in r.json["errors"]
    with app.app_context():
        assert db.session.scalar(select(Segment.id)) is None
    assert math.isnan(json.loads("NaN"))  # the stdlib accepts it: our parser must not
