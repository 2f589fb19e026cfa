"""/v1/segments: CRUD, the three filter forms, errors with paths, members, preview, ?segment=."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import select

from app.db import db
from app.models import Segment
from app.models.base import utcnow
from tests.conftest import make_project

STRING = "plan:pro,role:admin"
OBJECT = {"plan": "pro", "role": "admin"}
TREE = {
    "all": [
        {"attr": "plan", "op": "eq", "value": "pro"},
        {"any": [{"attr": "role", "op": "eq", "value": "admin"}]},
    ]
}


def upsert(api, *users):
    r = api.post("/v1/users", json=list(users))
    assert r.status_code == 200 and r.json["failed"] == 0, r.json


def user(user_id, **attributes):
    return {"userId": user_id, "attributes": attributes}


def create(api, name, filter):
    r = api.post("/v1/segments", json={"name": name, "filter": filter})
    assert r.status_code == 201, r.json
    return r.json


def members(api, ref, limit=1000):
    r = api.get(f"/v1/segments/{quote(str(ref), safe='')}/users?limit={limit}")
    assert r.status_code == 200, r.json
    return [u["userId"] for u in r.json["data"]]


def listed(api, segment, limit=1000):
    r = api.get(f"/v1/users?limit={limit}&segment={quote(segment, safe='')}")
    assert r.status_code == 200, r.json
    return [u["userId"] for u in r.json["data"]]


@pytest.fixture
def people(api):
    upsert(
        api,
        user("ann", plan="pro", role="admin", seats=3),
        user("bob", plan="pro", role="member", seats=10),
        user("cy", plan="free", role="admin"),
        user("dee", plan="pro", role="admin", seats=3.0),
        user("eve", role="admin"),
    )


def test_three_forms_store_a_tree_and_select_the_same_members(api, people):
    as_string = create(api, "by-string", STRING)
    as_object = create(api, "by-object", OBJECT)
    as_tree = create(api, "by-tree", TREE)
    for segment in (as_string, as_object, as_tree):
        assert members(api, segment["id"]) == ["ann", "dee"]
        assert members(api, segment["name"]) == ["ann", "dee"]
    assert as_string["filter"] == {
        "all": [
            {"attr": "plan", "op": "textEq", "value": "pro"},
            {"attr": "role", "op": "textEq", "value": "admin"},
        ]
    }
    assert as_string["stringForm"] == STRING
    assert as_object["filter"] == {
        "all": [
            {"attr": "plan", "op": "eq", "value": "pro"},
            {"attr": "role", "op": "eq", "value": "admin"},
        ]
    }
    assert as_object["stringForm"] is None and as_tree["stringForm"] is None
    assert as_tree["filter"] == TREE
    assert as_string["createdAt"] and as_string["updatedAt"]
    # The stored tree is the filter: posting it back selects the same users.
    again = create(api, "round-trip", as_string["filter"])
    assert again["filter"] == as_string["filter"] and members(api, "round-trip") == ["ann", "dee"]


def test_string_form_with_spaces_quotes_and_alternatives(api):
    upsert(
        api,
        user("ann", title="VP, Sales", city="New York", role="owner", quote='say "hi"'),
        user("bob", title="VP, Sales", city="New York", role="guest", quote='say "hi"'),
        user("cy", title="VP", city="New York", role="admin", quote='say "hi"'),
        user("dee", title="VP, Sales", city="Boston", role="admin", quote='say "hi"'),
        user("eve", title="VP, Sales", city="New York", role="admin", quote='say "hi"'),
    )
    text = ' title : "VP, Sales" , city: New York ,role:admin| owner,quote:"say \\"hi\\""'
    segment = create(api, "quoted", text)
    assert members(api, "quoted") == ["ann", "eve"]
    assert segment["filter"]["all"][0] == {"attr": "title", "op": "textEq", "value": "VP, Sales"}
    assert segment["filter"]["all"][2] == {
        "attr": "role",
        "op": "textIn",
        "value": ["admin", "owner"],
    }
    assert segment["filter"]["all"][3]["value"] == 'say "hi"'
    assert segment["stringForm"] == (
        'title:"VP, Sales",city:New York,role:admin|owner,quote:"say \\"hi\\""'
    )
    assert listed(api, text) == ["ann", "eve"]
    assert listed(api, segment["stringForm"]) == ["ann", "eve"]


def test_string_form_matches_numbers_and_booleans_as_text(api):
    upsert(api, user("ann", seats=3, beta=True), user("bob", seats="3", beta="true"))
    upsert(api, user("cy", seats=4, beta=False))
    assert members(api, create(api, "s", "seats:3,beta:true")["id"]) == ["ann", "bob"]


def test_crud_list_pagination_and_404(api):
    created = create(api, "pros", "plan:pro")
    assert api.get(f"/v1/segments/{created['id']}").json == created
    assert api.get("/v1/segments/pros").json == created
    for i in range(3):
        create(api, f"s{i}", {"plan": f"p{i}"})
    page = api.get("/v1/segments?limit=3").json
    assert [s["name"] for s in page["data"]] == ["pros", "s0", "s1"]
    rest = api.get(f"/v1/segments?limit=3&cursor={page['nextCursor']}").json
    assert [s["name"] for s in rest["data"]] == ["s2"] and rest["nextCursor"] is None

    patched = api.patch("/v1/segments/pros", json={"name": "professionals"})
    assert patched.status_code == 200, patched.json
    assert patched.json["filter"] == created["filter"] and patched.json["name"] == "professionals"
    patched = api.patch(f"/v1/segments/{created['id']}", json={"filter": {"plan": "team"}})
    assert patched.json["filter"] == {"all": [{"attr": "plan", "op": "eq", "value": "team"}]}
    assert patched.json["updatedAt"] >= created["updatedAt"]
    replaced = api.put(f"/v1/segments/{created['id']}", json={"name": "x", "filter": "a:b"})
    assert replaced.status_code == 200 and replaced.json["stringForm"] == "a:b"
    r = api.put(f"/v1/segments/{created['id']}", json={"name": "x"})
    assert r.status_code == 422 and "filter" in r.json["errors"]

    assert api.delete("/v1/segments/x").status_code == 204
    for method, path in [
        ("get", "/v1/segments/x"),
        ("get", f"/v1/segments/{created['id']}"),
        ("delete", "/v1/segments/x"),
        ("get", "/v1/segments/x/users"),
        ("patch", "/v1/segments/999999"),
    ]:
        kwargs = {"json": {"name": "y"}} if method == "patch" else {}
        r = getattr(api, method)(path, **kwargs)
        assert r.status_code == 404, (method, path, r.json)
        assert r.json["message"]


def test_duplicate_name_is_409_naming_name(api):
    create(api, "pros", "plan:pro")
    r = api.post("/v1/segments", json={"name": "pros", "filter": {"plan": "x"}})
    assert r.status_code == 409 and "name" in r.json["errors"]
    other = create(api, "others", "plan:free")
    r = api.patch(f"/v1/segments/{other['id']}", json={"name": "pros"})
    assert r.status_code == 409 and "name" in r.json["errors"]
    # Renaming to its own name is not a conflict.
    assert api.patch("/v1/segments/pros", json={"name": "pros"}).status_code == 200


@pytest.mark.parametrize(
    ("filter", "path"),
    [
        (
            {"all": [{"attr": "plan", "op": "eq", "value": "pro"}, {"attr": "x", "op": "nope"}]},
            "filter.all[1].op",
        ),
        ({"any": [{"not": {"event": "buy", "within": "3 days"}}]}, "filter.any[0].not.within"),
        ({"plan": None}, "filter.plan"),
        ({"role": ["admin", ["x"]]}, "filter.role[1]"),
        ([{"audience": ""}], "filter[0].audience"),
        (42, "filter"),
    ],
)
def test_malformed_tree_names_the_node(api, filter, path):
    r = api.post("/v1/segments", json={"name": "bad", "filter": filter})
    assert r.status_code == 422, r.json
    assert path in r.json["errors"], r.json
    assert path in r.json["message"]


@pytest.mark.parametrize(
    ("text", "path", "position"),
    [
        ("plan:pro,role", "filter[1]", 13),
        ("plan:pro,role:", "filter[1].value", 14),
        ('plan:pro, title:"VP, Sales', "filter[1].value", 16),
        ("plan:pro,bad key:x", "filter[1].attr", 9),
        ("plan:p:ro", "filter[0].value", 6),
    ],
)
def test_malformed_string_form_gives_the_position(api, text, path, position):
    r = api.post("/v1/segments", json={"name": "bad", "filter": text})
    assert r.status_code == 422, r.json
    assert path in r.json["errors"], r.json
    assert f"position {position}" in r.json["message"]
    preview = api.post("/v1/segments/preview", json={"filter": text})
    assert preview.status_code == 422 and path in preview.json["errors"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "filter"),
        ({"filter": "a:b"}, "name"),
        ({"name": "x", "filter": None}, "filter"),
        ({"name": "", "filter": "a:b"}, "name"),
        ({"name": "123", "filter": "a:b"}, "name"),
        ({"name": "a:b", "filter": "a:b"}, "name"),
        ({"name": "{x}", "filter": "a:b"}, "name"),
        ({"name": "a/b", "filter": "a:b"}, "name"),
        ({"name": "x" * 256, "filter": "a:b"}, "name"),
        ({"name": "x", "filter": {"plan": "a\x00b"}}, "filter.plan"),
        ({"name": "x", "filter": "a:b", "extra": 1}, "extra"),
    ],
)
def test_invalid_body_names_the_field(api, body, field):
    r = api.post("/v1/segments", json=body)
    assert r.status_code == 422, r.json
    assert field in r.json["errors"], r.json


def test_preview_counts_and_samples_without_storing(app, api):
    upsert(api, *[user(f"u{i:02}", plan="pro" if i % 2 else "free") for i in range(30)])
    r = api.post("/v1/segments/preview", json={"filter": "plan:pro"})
    assert r.status_code == 200, r.json
    assert r.json["count"] == 15
    assert r.json["sample"] == [f"u{i:02}" for i in range(1, 20, 2)]
    for same in ({"plan": "pro"}, {"attr": "plan", "op": "eq", "value": "pro"}):
        again = api.post("/v1/segments/preview", json={"filter": same}).json
        assert again == r.json
    none = api.post("/v1/segments/preview", json={"filter": "plan:team"}).json
    assert none == {"count": 0, "sample": []}
    with app.app_context():
        assert db.session.scalars(select(Segment)).all() == []


def test_anonymous_profiles_are_never_members(api):
    r = api.post(
        "/v1/identify",
        kind="publishable",
        json={"anonymousId": "anon-1", "traits": {"plan": "pro"}},
    )
    assert r.status_code == 200, r.json
    upsert(api, user("ann", plan="pro"))
    everyone = {"all": []}
    assert api.post("/v1/segments/preview", json={"filter": everyone}).json == {
        "count": 1,
        "sample": ["ann"],
    }
    create(api, "pros", "plan:pro")
    assert members(api, "pros") == ["ann"]
    assert listed(api, "pros") == ["ann"]
    # Without a segment, the listing still shows every profile.
    assert len(api.get("/v1/users").json["data"]) == 2


def test_segment_users_are_cursor_paginated_in_row_order(api):
    upsert(api, *[user(f"u{i:03}", plan="pro" if i % 3 else "free") for i in range(60)])
    create(api, "pros", "plan:pro")
    expected = [f"u{i:03}" for i in range(60) if i % 3]
    seen, cursor, pages = [], None, 0
    while True:
        path = "/v1/segments/pros/users?limit=7" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(path).json
        assert len(page["data"]) <= 7
        seen += [u["userId"] for u in page["data"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == expected and pages == 6
    first = api.get("/v1/segments/pros/users?limit=2").json["data"][0]
    assert first["attributes"] == {"plan": "pro"} and "createdAt" in first
    assert api.get("/v1/segments/pros/users?cursor=nope").status_code == 400
    assert api.get("/v1/segments/pros/users?limit=0").status_code == 400


def test_users_list_takes_a_segment_id_name_or_inline_filter(api, people):
    segment = create(api, "admins-pro", STRING)
    for value in (
        str(segment["id"]),
        "admins-pro",
        STRING,
        " plan : pro , role : admin ",
        json.dumps(OBJECT),
        json.dumps(TREE),
        json.dumps([{"attr": "plan", "op": "eq", "value": "pro"}, {"role": "admin"}]),
    ):
        assert listed(api, value) == ["ann", "dee"], value
    # Paginated like the plain listing.
    page = api.get(f"/v1/users?limit=1&segment={quote(STRING)}").json
    assert [u["userId"] for u in page["data"]] == ["ann"]
    rest = api.get(f"/v1/users?limit=1&segment={quote(STRING)}&cursor={page['nextCursor']}").json
    assert [u["userId"] for u in rest["data"]] == ["dee"]
    assert listed(api, "seats:3") == ["ann", "dee"]
    assert listed(api, json.dumps({"seats": 3})) == ["ann", "dee"]
    assert listed(api, json.dumps({"attr": "seats", "op": "gt", "value": 3})) == ["bob"]


@pytest.mark.parametrize(
    ("value", "status", "field"),
    [
        ("no-such-segment", 404, "segment"),
        ("424242", 404, "segment"),
        ("plan:pro,role", 422, "segment[1]"),
        ('{"plan": ', 422, "segment"),
        ('{"all": [{"attr": "plan", "op": "nope"}]}', 422, "segment.all[0].op"),
        ("", 422, "segment"),
    ],
)
def test_users_list_segment_errors(api, people, value, status, field):
    r = api.get(f"/v1/users?segment={quote(value, safe='')}")
    assert r.status_code == status, r.json
    assert field in r.json["errors"], r.json


def test_new_and_changed_users_match_without_touching_the_segment(api):
    segment = create(api, "pros", "plan:pro")
    assert members(api, "pros") == []
    upsert(api, user("late", plan="pro"))
    assert members(api, "pros") == ["late"]
    assert listed(api, "pros") == ["late"]
    upsert(api, user("late", plan="free"), user("later", plan="pro"))
    assert members(api, "pros") == ["later"]
    assert api.get("/v1/segments/pros").json["updatedAt"] == segment["updatedAt"]


def test_event_history_filters(api):
    upsert(api, user("ann"), user("bob"), user("cy"))
    now = utcnow()
    events = [
        {"name": "purchase", "userId": "ann", "properties": {"total": 30}},
        {"name": "purchase", "userId": "ann", "properties": {"total": 5}},
        {"name": "purchase", "userId": "bob", "properties": {"total": 50}},
        {
            "name": "purchase",
            "userId": "cy",
            "timestamp": (now - timedelta(days=40)).isoformat(),
        },
        {
            "name": "purchase",
            "userId": "cy",
            "timestamp": (now - timedelta(days=41)).isoformat(),
        },
    ]
    r = api.post("/v1/events", json=events)
    assert r.status_code in (200, 202), r.json
    twice = {"event": "purchase", "count": {"gte": 2}, "within": "30d"}
    assert members(api, create(api, "twice", twice)["id"]) == ["ann"]
    ever_twice = {"event": "purchase", "count": {"gte": 2}}
    assert members(api, create(api, "ever", ever_twice)["id"]) == ["ann", "cy"]
    big = {"event": "purchase", "where": {"attr": "total", "op": "gte", "value": 30}}
    assert members(api, create(api, "big", big)["id"]) == ["ann", "bob"]
    idle = {"event": "purchase", "op": "notPerformed", "within": "7d"}
    assert members(api, create(api, "idle", idle)["id"]) == ["cy"]


def test_projects_are_isolated(app, api, client, people):
    other = make_project(app, "Other")
    headers = other.auth()
    segment = create(api, "pros", "plan:pro")
    r = client.post("/v1/users", headers=headers, json=[user("zed", plan="pro", role="admin")])
    assert r.status_code == 200
    for path in (f"/v1/segments/{segment['id']}", "/v1/segments/pros", "/v1/segments/pros/users"):
        assert client.get(path, headers=headers).status_code == 404
    assert client.get("/v1/users?segment=pros", headers=headers).status_code == 404
    assert client.get("/v1/segments", headers=headers).json["data"] == []
    # The same name is free in another project, and each sees only its own users.
    r = client.post("/v1/segments", headers=headers, json={"name": "pros", "filter": STRING})
    assert r.status_code == 201
    theirs = client.get("/v1/segments/pros/users", headers=headers).json["data"]
    assert [u["userId"] for u in theirs] == ["zed"]
    assert members(api, "pros") == ["ann", "bob", "dee"]
    preview = client.post("/v1/segments/preview", headers=headers, json={"filter": "plan:pro"})
    assert preview.json == {"count": 1, "sample": ["zed"]}
    assert client.get(f"/v1/users?segment={STRING}", headers=headers).json["data"][0]["userId"] == (
        "zed"
    )


def test_publishable_key_cannot_use_segments(api):
    assert api.get("/v1/segments", kind="publishable").status_code == 403
    r = api.post("/v1/segments/preview", kind="publishable", json={"filter": "a:b"})
    assert r.status_code == 403
