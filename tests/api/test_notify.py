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


def test_notify_takes_a_client_id_once(app, api):
    r = api.post("/v1/notify", json={"userId": "u", "body": "x", "id": "welcome-u"})
    assert r.status_code == 202, r.json
    again = api.post("/v1/notify", json={"userId": "u", "body": "x", "id": "welcome-u"})
    assert again.status_code == 409 and again.json["errors"] == {"id": ["id/exists"]}
    # The same client ids as POST /v1/messages: one namespace per project.
    api.post("/v1/templates", json={"name": "t", "channels": {"inapp": {"en": {"body": "hi"}}}})
    taken = api.post("/v1/messages", json={"template": "t", "userId": "u", "id": "welcome-u"})
    assert taken.status_code == 409
    assert len(_statuses(app)) == 1


def test_notify_increment_id_stacks_a_pending_message(app, api):
    first = api.post("/v1/notify", json={"userId": "u", "body": "1 like", "incrementId": "likes"})
    second = api.post("/v1/notify", json={"userId": "u", "body": "2 likes", "incrementId": "likes"})
    assert first.status_code == second.status_code == 202, second.json
    assert first.json["messageIds"] == second.json["messageIds"]
    with app.app_context():
        [message] = db.session.scalars(select(Message))
        assert (message.increment_id, message.increment_count) == ("likes", 2)
        assert message.send_id == second.json["id"]  # the latest content
    broadcast = api.post(
        "/v1/notify", json={"broadcast": True, "body": "x", "incrementId": "likes"}
    )
    assert broadcast.status_code == 422 and "incrementId" in broadcast.json["errors"]
    bad = api.post("/v1/notify", json={"userId": "u", "body": "x", "overrides": {"fax": {}}})
    assert bad.status_code == 422 and "overrides.fax" in bad.json["errors"]


def test_content_and_overrides_are_rendered_for_each_user(app, api, workers):
    api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    r = api.post(
        "/v1/notify",
        json={
            "userId": "ann",
            "title": "Hi {{ user.userId }}",
            "body": "Your code: {{ data.code }}",
            "data": {"code": "123", "name": "Ann"},
            "channels": ["inapp", "email"],
            "overrides": {"email": {"subject": "Hello {{ data.name }}"}},
        },
    )
    assert r.status_code == 202, r.json
    wait_for(lambda: set(_statuses(app).values()) == {"sent"})
    with app.app_context():
        rendered = {m.channel: m.rendered for m in db.session.scalars(select(Message))}
    assert rendered["inapp"]["title"] == "Hi ann"
    assert rendered["inapp"]["body"] == "Your code: 123"
    assert rendered["email"]["subject"] == "Hello Ann"
    assert rendered["email"]["text"] == "Your code: 123"


def test_targets_are_exactly_one_and_checked_by_the_schema(api):
    cases = [
        ({"segment": {}, "body": "x"}, 422, "segment"),
        ({"broadcast": False, "body": "x"}, 422, "userId"),  # false is no target
        ({"broadcast": "yes", "body": "x"}, 422, "broadcast"),  # a JSON boolean only
        ({"broadcast": True, "userId": "u", "body": "x"}, 422, "broadcast"),
        ({"segment": "plan:pro", "body": "x", "incrementId": "k"}, 422, "incrementId"),
        ({"userId": "u", "body": "x", "transactional": 1}, 422, "transactional"),
        ({"userId": "u", "body": "x", "ttlSeconds": 1.5}, 422, "ttlSeconds"),
        ({"userId": "u", "body": "x", "extra": 1}, 422, "extra"),
        ({"userId": "u", "title": "t" * 1001}, 422, "title"),
        ({"userIds": [], "body": "x"}, 422, "userIds"),
        ({"userIds": [f"u{i}" for i in range(1001)], "body": "x"}, 413, "userIds"),
    ]
    for body, status, field in cases:
        r = api.post("/v1/notify", json=body)
        assert r.status_code == status, (body, r.json)
        assert any(k.startswith(field) for k in r.json["errors"]), (body, r.json)
    ok = api.post("/v1/notify", json={"broadcast": False, "userId": "u", "title": "t", "body": ""})
    assert ok.status_code == 202, ok.json


def test_notify_batch_takes_a_segment_only(api):
    r = api.post("/v1/notify/batch", json={"userId": "u", "body": "x"})
    assert r.status_code == 422 and "segment" in r.json["errors"], r.json
    r = api.post("/v1/notify/batch", json={"segment": "plan:pro", "userId": "u", "body": "x"})
    assert r.status_code == 422 and "segment" in r.json["errors"], r.json
    r = api.post("/v1/notify/batch", json={"segment": "plan:pro", "body": "x"})
    assert r.status_code == 202 and r.json["status"] == "fanning_out", r.json
    r = api.post("/v1/notify/batch", json={"segment": "no-such-segment", "body": "x"})
    assert r.status_code == 404 and "segment" in r.json["errors"], r.json


def _send_of(app, message_id: int):
    from app.models.message import Send

    with app.app_context():
        message = db.session.get(Message, message_id)
        send = db.session.get(Send, message.send_id)
        return send.transactional, send.topic, send.urgency, message.transactional


def test_category_topic_and_urgency_are_taken_and_checked(app, api):
    api.patch("/v1/project", json={"settings": {"topics": [{"key": "news", "name": "News"}]}})
    r = api.post(
        "/v1/notify",
        json={"userId": "u1", "body": "x", "topic": "news", "urgency": "high"},
    )
    assert r.status_code == 202, r.json
    assert _send_of(app, r.json["messageIds"][0]) == (False, "news", "high", False)
    r = api.post(
        "/v1/notify", json={"userId": "u1", "body": "code 1234", "category": "transactional"}
    )
    assert r.status_code == 202, r.json
    assert _send_of(app, r.json["messageIds"][0]) == (True, None, None, True)
    for bad, field in (
        ({"category": "spam"}, "category"),
        ({"category": "marketing", "transactional": True}, "category"),
        ({"category": "transactional", "topic": "news"}, "topic"),
        ({"topic": "Not A Key"}, "topic"),
        ({"topic": "offers"}, "topic"),  # not one of the project's topics
        ({"urgency": "now"}, "urgency"),
    ):
        r = api.post("/v1/notify", json={"userId": "u1", "body": "x", **bad})
        assert r.status_code == 422, (bad, r.json)
        assert field in r.json["errors"], (bad, r.json)


def test_template_messages_take_a_topic_per_item(app, api):
    api.patch("/v1/project", json={"settings": {"topics": [{"key": "news", "name": "News"}]}})
    r = api.post(
        "/v1/templates",
        json={"name": "t", "defaultLanguage": "en", "channels": {"inapp": {"en": {"title": "T"}}}},
    )
    assert r.status_code == 201, r.json
    r = api.post(
        "/v1/messages",
        json=[
            {"template": "t", "userId": "a", "topic": "news"},
            {"template": "t", "userId": "b", "topic": "offers"},
        ],
    )
    assert r.status_code == 200, r.json
    first, second = r.json["data"]
    assert first["ok"] is True
    assert second["ok"] is False and "topic" in second["errors"], second
