"""POST /v1/events and GET /v1/pixel.gif."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.db import db
from app.models import Event, User


def _events(app) -> list[Event]:
    with app.app_context():
        return list(db.session.scalars(select(Event).order_by(Event.id)))


def test_single_event_is_a_committed_row_before_the_answer(app, api):
    r = api.post(
        "/v1/events", json={"name": "signup", "userId": "u1", "properties": {"plan": "pro"}}
    )
    assert r.status_code == 202
    assert (r.json["accepted"], r.json["duplicates"]) == (1, 0)
    [event] = _events(app)
    assert (event.name, event.properties, event.processed_at) == ("signup", {"plan": "pro"}, None)
    # Unknown userId creates the user on first sight.
    assert api.get("/v1/users/u1").json["lastSeenAt"] is not None


def test_global_event_has_no_user(app, api):
    r = api.post("/v1/events", json={"name": "deploy", "properties": {"version": "1.2"}})
    assert r.status_code == 202
    [event] = _events(app)
    assert event.user_id is None and not event.erased
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 0


def test_message_id_is_applied_once_in_a_batch_and_later(app, api):
    batch = [
        {"name": "a", "userId": "u", "messageId": "m1"},
        {"name": "a", "userId": "u", "messageId": "m1"},
        {"name": "b", "userId": "u", "messageId": "m2"},
        {"name": "c", "userId": "u"},
    ]
    r = api.post("/v1/events", json=batch)
    assert (r.json["accepted"], r.json["duplicates"]) == (3, 1)
    r = api.post("/v1/events", json=batch)
    assert (r.json["accepted"], r.json["duplicates"]) == (1, 3)
    assert len(_events(app)) == 4


def test_message_ids_are_per_project(app, api, client):
    from tests.conftest import make_project

    other = make_project(app, "Other")
    api.post("/v1/events", json={"name": "a", "messageId": "same"})
    r = client.post("/v1/events", headers=other.auth(), json={"name": "a", "messageId": "same"})
    assert r.json["accepted"] == 1


def test_timestamps(app, api):
    past = "2025-01-02T03:04:05Z"
    r = api.post(
        "/v1/events",
        json=[
            {"name": "a", "timestamp": past},
            {"name": "b", "timestamp": "2025-01-02T03:04:05"},  # naive is UTC
            {"name": "c", "timestamp": (datetime.now(UTC) + timedelta(days=3)).isoformat()},
            {"name": "d", "timestamp": "yesterday"},
        ],
    )
    assert r.status_code == 202
    assert r.json["accepted"] == 2 and r.json["rejected"] == 2
    assert "future" in r.json["errors"]["2"]["timestamp"][0]
    assert "timestamp" in r.json["errors"]["3"]
    stored = {e.name: e.timestamp for e in _events(app)}
    assert stored["a"] == stored["b"] == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_invalid_events_name_the_field_and_index(app, api):
    r = api.post("/v1/events", json={"userId": "u"})
    assert r.status_code == 422 and "name" in r.json["errors"]["0"]
    r = api.post(
        "/v1/events",
        json=[
            {"name": "ok"},
            {"name": "x", "properties": "nope"},
            {"name": "x", "userId": {"a": 1}},
            {"name": "x", "bogus": 1},
        ],
    )
    assert r.status_code == 202
    assert set(r.json["errors"]) == {"1", "2", "3"}
    assert "properties" in r.json["errors"]["1"]
    assert "userId" in r.json["errors"]["2"]
    assert "bogus" in r.json["errors"]["3"]
    assert [e.name for e in _events(app)] == ["ok"]


def test_size_limits(app, api):
    big = {"name": "big", "properties": {"blob": "x" * 33 * 1024}}
    r = api.post("/v1/events", json=big)
    assert r.status_code == 413
    r = api.post("/v1/events", json=[big, {"name": "small"}])
    assert r.status_code == 202 and "0" in r.json["errors"]
    r = api.post("/v1/events", json=[{"name": "x", "properties": {"b": "y" * 20000}}] * 30)
    assert r.status_code == 413  # 600 KB body
    r = api.post("/v1/events", json=[{"name": "x"}] * 1001)
    assert r.status_code == 413 and r.json["errors"]
    assert [e.name for e in _events(app)] == ["small"]


def test_gzip_body(app, api):
    import gzip
    import json

    raw = gzip.compress(json.dumps([{"name": "zipped", "userId": "u"}]).encode())
    r = api.post(
        "/v1/events",
        data=raw,
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert r.status_code == 202, r.json
    assert [e.name for e in _events(app)] == ["zipped"]
    bomb = gzip.compress(b"[" + b" " * (2 * 1024 * 1024) + b"]")
    r = api.post(
        "/v1/events",
        data=bomb,
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert r.status_code == 413


def test_pixel_records_and_always_answers_a_gif(app, client, project):
    r = client.get(
        f"/v1/pixel.gif?key={project.publishable}&event=open&userId=u1"
        "&p.campaign=spring&p.variant=b&messageId=px1"
    )
    assert r.status_code == 200 and r.mimetype == "image/gif"
    assert r.data.startswith(b"GIF89a")
    assert "no-cache" in r.headers["Cache-Control"]
    [event] = _events(app)
    assert event.name == "open" and event.properties == {"campaign": "spring", "variant": "b"}
    assert event.source == "pixel"
    for bad in (
        "?key=pk_bad_bad&event=open&userId=u",
        f"?key={project.publishable}",
        "",
        f"?key={project.publishable}&event=" + "x" * 300,
    ):
        r = client.get("/v1/pixel.gif" + bad)
        assert r.status_code == 200 and r.mimetype == "image/gif"
        assert r.headers["X-Cairn-Recorded"] == "0"
    assert len(_events(app)) == 1


def test_ids_are_integers_or_non_blank_text(app, api):
    # As JSON Schema counts integers (the OpenAPI document): 7.0 is the id "7".
    r = api.post("/v1/events", json={"name": "n", "userId": 7.0})
    assert r.status_code == 202, r.json
    assert [e.name for e in _events(app)] == ["n"]
    with app.app_context():
        assert db.session.scalar(select(User.external_id)) == "7"
    for bad in ({"userId": "  "}, {"anonymousId": "\t"}, {"userId": 1.5}):
        r = api.post("/v1/events", json={"name": "n", **bad})
        assert r.status_code == 422, bad
        assert set(r.json["errors"]["0"]) == set(bad)
    assert len(_events(app)) == 1


def test_the_cairn_message_id_prefix_is_reserved_for_cairns_own_events(app, api):
    """Delivery outcome events use `cairn:` ids; a client's must not take one of them."""
    r = api.post("/v1/events", json={"name": "x", "userId": "u1", "messageId": "cairn:m.1"})
    assert r.status_code == 422 and "messageId" in r.json["errors"]["0"]
    r = api.post("/v1/track", json={"event": "x", "userId": "u1", "messageId": "cairn:m.1"})
    assert r.status_code == 422 and "messageId" in r.json["errors"]["0"]
    r = api.post("/v1/events", json={"name": "x", "userId": "u1", "messageId": "mine:cairn:1"})
    assert r.status_code == 202
    assert len(_events(app)) == 1


def test_requests_made_inside_one_app_context_each_read_their_own_body(app, api):
    # A caller inside an app context (a script, a test) shares that context's `g` across its
    # requests; each request still stores its own batch (it stored the first one's again).
    with app.app_context():
        first = api.post("/v1/events", json=[{"name": "a", "userId": "u1"}])
        second = api.post("/v1/events", json=[{"name": "b", "userId": f"u{i}"} for i in range(3)])
    assert (first.json["accepted"], second.json["accepted"]) == (1, 3)
    assert [e.name for e in _events(app)] == ["a", "b", "b", "b"]
