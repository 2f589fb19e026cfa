"""POST /v1/notify, the outbox and delivery through real in-process workers."""

from __future__ import annotations

from sqlalchemy import select

from app.db import db
from app.models.message import Message
from tests.conftest import wait_for


def _statuses(app) -> dict[int, str]:
    with app.app_context():
        return {m.id: m.status for m in db.session.scalars(select(Message))}


def test_notify_one_user_is_stored_then_delivered_in_app(app, api, workers):
    r = api.post("/v1/notify", json={"userId": "u1", "title": "Hi", "body": "Welcome"})
    assert r.status_code == 202, r.json
    [mid] = r.json["messageIds"]
    wait_for(lambda: _statuses(app).get(mid) == "sent")
    detail = api.get(f"/v1/messages/{mid}").json
    assert detail["userId"] == "u1" and detail["channel"] == "inapp"
    assert [h["status"] for h in detail["history"]] == ["queued", "sent"]
    assert detail["content"]["title"] == "Hi"


def test_rows_are_committed_even_without_workers(app, api):
    r = api.post(
        "/v1/notify", json={"userIds": ["a", "b", "a"], "body": "x", "channels": ["inapp", "email"]}
    )
    assert r.status_code == 202
    assert r.json["messages"] == 2  # a and b in-app; nobody has an email
    assert r.json["unreachable"] == {"email": 2}
    assert set(_statuses(app).values()) == {"queued"}


def test_email_and_sms_go_to_the_sandbox(app, api, workers):
    api.post("/v1/users", json={"userId": "u1", "email": "u1@example.com", "phone": "+14155550123"})
    r = api.post(
        "/v1/notify",
        json={
            "userId": "u1",
            "title": "Sale",
            "body": "50% off",
            "url": "https://shop.example/sale",
            "channels": ["email", "sms"],
        },
    )
    assert r.json["messages"] == 2
    wait_for(lambda: set(_statuses(app).values()) == {"sent"})
    sandbox = api.get("/v1/sandbox/messages").json["data"]
    by_channel = {m["channel"]: m for m in sandbox}
    assert by_channel["email"]["to"] == "u1@example.com"
    assert by_channel["email"]["content"]["subject"] == "Sale"
    assert "https://shop.example/sale" in by_channel["email"]["content"]["html"]
    assert by_channel["sms"]["to"] == "+14155550123"
    assert "50% off" in by_channel["sms"]["content"]["body"]


def test_bad_notify_input_names_the_field(api):
    cases = [
        ({"title": "x"}, "userId"),
        ({"userId": "u", "userIds": ["v"], "body": "x"}, "userId"),
        ({"userId": "u"}, "body"),
        ({"userId": "u", "body": "x", "channels": ["fax"]}, "channels"),
        ({"userId": "u", "body": "x", "ttlSeconds": 0}, "ttlSeconds"),
        ({"segment": "plan:", "body": "x"}, "segment"),
        ({"segment": {"attr": "x", "op": "bogus"}, "body": "x"}, "segment.op"),
        ({"userIds": [1], "body": "x"}, "userIds"),
    ]
    for body, field in cases:
        r = api.post("/v1/notify", json=body)
        assert r.status_code in (400, 422), (body, r.json)
        assert any(k.startswith(field) for k in r.json["errors"]), (body, r.json)


def test_expired_messages_are_never_sent(app, api, sweeper):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    r = api.post("/v1/notify", json={"userId": "u", "body": "late", "ttlSeconds": 60})
    [mid] = r.json["messageIds"]
    with app.app_context():
        db.session.execute(
            update(Message).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        db.session.commit()
    assert sweeper().expired == 1
    assert _statuses(app)[mid] == "expired"
    detail = api.get(f"/v1/messages/{mid}").json
    assert detail["history"][-1]["status"] == "expired"


def test_same_send_never_reaches_an_address_twice(app, api, workers):
    api.post(
        "/v1/users",
        json=[
            {"userId": "a", "email": "same@example.com"},
            {"userId": "b", "email": "SAME@example.com"},
        ],
    )
    r = api.post("/v1/notify", json={"userIds": ["a", "b"], "body": "once", "channels": ["email"]})
    assert r.json["messages"] == 1 and r.json["deduplicated"] == 1
    wait_for(lambda: set(_statuses(app).values()) == {"sent"})
    assert len(api.get("/v1/sandbox/messages").json["data"]) == 1
