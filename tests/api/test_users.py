"""POST/GET/DELETE /v1/users: upsert, merge semantics, normalization, erasure."""

from __future__ import annotations

from sqlalchemy import select

from app.db import db
from app.models import Event, User
from tests.conftest import make_project


def test_upsert_creates_then_updates_with_attribute_merge(api):
    r = api.post("/v1/users", json={"userId": "u1", "attributes": {"plan": "pro", "seats": 3}})
    assert r.status_code == 200, r.json
    assert (r.json["created"], r.json["updated"]) == (1, 0)
    r = api.post("/v1/users", json={"userId": "u1", "attributes": {"seats": None, "role": "admin"}})
    assert (r.json["created"], r.json["updated"]) == (0, 1)
    user = api.get("/v1/users/u1").json
    assert user["attributes"] == {"plan": "pro", "role": "admin"}


def test_reserved_fields_are_normalized(api):
    r = api.post(
        "/v1/users",
        json={
            "userId": "u1",
            "email": "Ann@Example.COM",
            "phone": "(202) 555-0143",
            "language": "pt-br",
            "timezone": "America/Sao_Paulo",
        },
    )
    assert r.status_code == 200, r.json
    user = api.get("/v1/users/u1").json
    assert user["email"] == "ann@example.com"
    assert user["phone"] == "+12025550143"
    assert user["language"] == "pt-BR"
    assert user["timezone"] == "America/Sao_Paulo"
    # null clears a reserved field too
    api.post("/v1/users", json={"userId": "u1", "phone": None})
    assert api.get("/v1/users/u1").json["phone"] is None


def test_default_region_makes_local_formats_the_same_person(app, client):
    korea = make_project(app, "Seoul", region="KR")
    h = korea.auth()
    client.post("/v1/users", headers=h, json={"userId": "a", "phone": "010-1234-1234"})
    client.post("/v1/users", headers=h, json={"userId": "b", "phone": "01012341234"})
    a = client.get("/v1/users/a", headers=h).json["phone"]
    b = client.get("/v1/users/b", headers=h).json["phone"]
    assert a == b == "+821012341234"
    # Erasing by either local form finds both.
    r = client.post("/v1/users/delete", headers=h, json={"phones": ["010 1234 1234"]})
    assert r.json == {"deleted": 2}


def test_dollar_aliases_inside_attributes(api):
    api.post(
        "/v1/users",
        json={
            "userId": "u1",
            "attributes": {"$email": "x@example.com", "$phone_number": "+14155550100", "tier": 2},
        },
    )
    user = api.get("/v1/users/u1").json
    assert user["email"] == "x@example.com"
    assert user["phone"] == "+14155550100"
    assert user["attributes"] == {"tier": 2}


def test_single_invalid_user_is_422_naming_the_fields(api):
    r = api.post(
        "/v1/users",
        json={
            "userId": "u1",
            "email": "nope",
            "timezone": "Mars/Olympus",
            "language": "not a tag!!",
            "phone": "12",
        },
    )
    assert r.status_code == 422
    assert set(r.json["errors"]) == {"email", "timezone", "language", "phone"}
    assert r.json["message"]
    assert api.get("/v1/users/u1").status_code == 404


def test_batch_reports_bad_items_by_index_and_keeps_the_rest(api):
    r = api.post(
        "/v1/users",
        json=[
            {"userId": "good1"},
            {"userId": "bad", "email": "not-an-email"},
            {"email": "missing@example.com"},
            "not an object",
            {"userId": "good2", "attributes": {"x": 1}},
        ],
    )
    assert r.status_code == 200, r.json
    assert (r.json["created"], r.json["failed"]) == (2, 3)
    results = r.json["results"]
    assert [x["ok"] for x in results] == [True, False, False, False, True]
    assert "email" in results[1]["errors"]
    assert "userId" in results[2]["errors"]
    assert api.get("/v1/users/good2").json["attributes"] == {"x": 1}
    assert api.get("/v1/users/bad").status_code == 404


def test_same_user_twice_in_a_batch_applies_in_order(api):
    r = api.post(
        "/v1/users",
        json=[
            {"userId": "u", "attributes": {"a": 1}},
            {"userId": "u", "attributes": {"a": 2, "b": 1}},
        ],
    )
    assert r.json["created"] == 1 and r.json["updated"] == 1
    assert api.get("/v1/users/u").json["attributes"] == {"a": 2, "b": 1}


def test_batch_limits_and_malformed_bodies(api):
    r = api.post("/v1/users", json=[{"userId": f"u{i}"} for i in range(1001)])
    assert r.status_code == 413 and r.json["code"] == 413
    r = api.post("/v1/users", data="{not json", content_type="application/json")
    assert r.status_code == 400 and "JSON" in r.json["message"]
    r = api.post("/v1/users", json="a string")
    assert r.status_code == 400
    r = api.post("/v1/users", json=[])
    assert r.status_code == 400
    r = api.post("/v1/users", json={"userId": "u", "attributes": [1, 2]})
    assert r.status_code == 422 and "attributes" in r.json["errors"]
    r = api.post("/v1/users", json={"userId": "u", "nickname": "x"})
    assert r.status_code == 422 and "nickname" in r.json["errors"]


def test_list_is_cursor_paginated(api):
    api.post("/v1/users", json=[{"userId": f"u{i:02}"} for i in range(25)])
    seen, cursor = [], None
    while True:
        query = "?limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = api.get("/v1/users" + query).json
        seen += [u["userId"] for u in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"u{i:02}" for i in range(25)]
    assert api.get("/v1/users?limit=5000").status_code == 400
    assert api.get("/v1/users?cursor=%%%").status_code == 400


def test_erase_one_user_removes_profile_and_event_pii(app, api):
    api.post("/v1/users", json={"userId": "gone", "email": "gone@example.com"})
    api.post(
        "/v1/events",
        json={
            "name": "purchase",
            "userId": "gone",
            "properties": {"card": "4242"},
            "messageId": "m-1",
        },
    )
    api.post("/v1/events", json={"name": "purchase", "userId": "kept", "properties": {"k": 1}})
    r = api.delete("/v1/users/gone")
    assert r.status_code == 200 and r.json == {"deleted": 1}
    assert api.get("/v1/users/gone").status_code == 404
    assert [u["userId"] for u in api.get("/v1/users").json["data"]] == ["kept"]
    with app.app_context():
        events = db.session.scalars(select(Event).order_by(Event.id)).all()
        erased = [e for e in events if e.erased]
        assert len(erased) == 1 and erased[0].user_id is None and erased[0].properties == {}
        assert db.session.scalar(select(User).where(User.email == "gone@example.com")) is None
    # A retry of the same event is still recognised, it does not resurrect the user.
    r = api.post("/v1/events", json={"name": "purchase", "userId": "gone", "messageId": "m-1"})
    assert r.json["duplicates"] == 1
    assert r.json["accepted"] == 0


def test_batch_erase_by_user_id_email_and_phone(api):
    api.post(
        "/v1/users",
        json=[
            {"userId": "a"},
            {"userId": "b", "email": "b@example.com"},
            {"userId": "c", "phone": "+14155550101"},
            {"userId": "d"},
        ],
    )
    r = api.delete("/v1/users", json={"userIds": ["a"], "emails": ["B@example.com"]})
    assert r.status_code == 200 and r.json == {"deleted": 2}
    r = api.post("/v1/users/delete", json=[{"phone": "+1 415 555 0101"}, {"userId": "zzz"}])
    assert r.json == {"deleted": 1}
    assert [u["userId"] for u in api.get("/v1/users").json["data"]] == ["d"]
    r = api.post("/v1/users/delete", json={"userIds": [f"u{i}" for i in range(1001)]})
    assert r.status_code == 413
    r = api.post("/v1/users/delete", json=[{"userId": "a", "email": "x"}])
    assert r.status_code == 422 and "0" in r.json["errors"]


def test_a_batch_with_nothing_valid_is_refused_whole(api):
    # As on /v1/events: partial batches answer 200 with per-item results, an all-bad one 422.
    r = api.post("/v1/users", json=[{"email": "x@example.com"}, {"userId": "  "}])
    assert r.status_code == 422, r.json
    assert set(r.json["errors"]) == {"0", "1"}
    assert "userId" in r.json["errors"]["1"]
    assert api.get("/v1/users").json["data"] == []


def test_an_attribute_alias_is_checked_even_when_the_field_is_given(api):
    r = api.post(
        "/v1/users",
        json={"userId": "u", "phone": "+14155550101", "attributes": {"$phone_number": 5}},
    )
    assert r.status_code == 422, r.json
    assert set(r.json["errors"]) == {"attributes.$phone_number"}
    r = api.post(
        "/v1/users",
        json={
            "userId": "u",
            "email": "ann@example.com",
            "attributes": {"$email": "bob@example.com"},
        },
    )
    assert r.status_code == 200 and api.get("/v1/users/u").json["email"] == "ann@example.com"
