"""POST /v1/messages: template messages, client ids, profile filling, incrementId stacking."""

from __future__ import annotations

from sqlalchemy import select

from app.db import db
from app.models.message import Message
from tests.conftest import wait_for

TEMPLATE = {
    "name": "order-shipped",
    "defaultLanguage": "en",
    "channels": {
        "inapp": {
            "en": {"title": "Shipped", "body": "Order {{ params.order }} is on its way"},
            "fr": {"title": "Expédiée", "body": "Commande {{ params.order }} en route"},
        },
        "email": {
            "en": {
                "subject": "Order {{ params.order }} shipped",
                "html": "<p>Hi {{ user.first_name }}, order {{ params.order }}</p>",
                "text": "Hi {{ user.first_name }}",
            }
        },
        "sms": {"en": {"body": "Order {{ params.order }} shipped"}},
    },
}


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def test_template_message_renders_per_channel_and_language(app, api, workers):
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    api.post(
        "/v1/users", json={"userId": "u1", "language": "fr-CA", "attributes": {"first_name": "Zoé"}}
    )
    r = api.post(
        "/v1/messages",
        json={
            "template": "order-shipped",
            "userId": "u1",
            "data": {"order": "A-17"},
            "userEmail": "zoe@example.com",
            "id": "ship-A-17",
        },
    )
    assert r.status_code == 200, r.json
    assert r.json["ok"] is True and r.json["id"] == "ship-A-17"
    assert r.json["smsError"] == "no phone number on the profile"
    wait_for(lambda: {m.status for m in _messages(app)} == {"sent"})
    by_channel = {m.channel: m.rendered for m in _messages(app)}
    assert by_channel["inapp"]["body"] == "Commande A-17 en route"  # fr-CA → fr
    assert by_channel["email"]["subject"] == "Order A-17 shipped"  # no fr email → en
    assert "Zoé" in by_channel["email"]["html"]
    # userEmail filled the missing email; it never overwrites an existing one.
    assert api.get("/v1/users/u1").json["email"] == "zoe@example.com"
    api.post(
        "/v1/messages",
        json={"template": "order-shipped", "userId": "u1", "userEmail": "other@example.com"},
    )
    assert api.get("/v1/users/u1").json["email"] == "zoe@example.com"


def test_client_id_sent_twice_is_id_exists(api):
    api.post("/v1/templates", json=TEMPLATE)
    first = api.post("/v1/messages", json={"template": "order-shipped", "userId": "u", "id": "m-1"})
    assert first.status_code == 200
    again = api.post("/v1/messages", json={"template": "order-shipped", "userId": "u", "id": "m-1"})
    assert again.status_code == 409 and again.json["message"] == "id/exists"
    batch = api.post(
        "/v1/messages",
        json=[
            {"template": "order-shipped", "userId": "u", "id": "m-1"},
            {"template": "order-shipped", "userId": "u", "id": "m-2"},
            {"template": "order-shipped", "userId": "u", "id": "m-2"},
            {"template": "nope", "userId": "u"},
            {"userId": "u"},
        ],
    ).json["data"]
    assert [b["ok"] for b in batch] == [False, True, False, False, False]
    assert batch[0]["error"] == batch[2]["error"] == "id/exists"
    assert batch[3]["error"] == "template/not-found"
    assert "template" in batch[4]["errors"]
    too_many = api.post("/v1/messages", json=[{"template": "x", "userId": "u"}] * 51)
    assert too_many.status_code == 413


def test_increment_id_stacks_pending_and_replaces_sent(app, api, client, project, workers):
    from app.services.projects import user_hash

    api.post(
        "/v1/templates",
        json={
            "name": "likes",
            "channels": {
                "inapp": {"en": {"title": "New likes", "body": "{{ params.who }} liked your post"}}
            },
        },
    )
    # Without workers the first two would both be pending; with workers the first may be out.
    first = api.post(
        "/v1/messages",
        json={"template": "likes", "userId": "u", "data": {"who": "Ann"}, "incrementId": "post-1"},
    )
    [first_id] = first.json["messageIds"]
    wait_for(lambda: _messages(app)[0].status == "sent")
    second = api.post(
        "/v1/messages",
        json={"template": "likes", "userId": "u", "data": {"who": "Bob"}, "incrementId": "post-1"},
    )
    [second_id] = second.json["messageIds"]
    assert second_id != first_id
    wait_for(lambda: all(m.status == "sent" for m in _messages(app)))
    params = {
        "key": project.publishable,
        "userId": "u",
        "userHash": user_hash(project.identity_secret, "u"),
    }
    inbox = client.get("/v1/inbox", query_string=params).json["data"]
    assert len(inbox) == 1  # the newer one replaced the older on the device
    assert inbox[0]["body"] == "Bob liked your post" and inbox[0]["count"] == 2
    assert inbox[0]["replaces"] == first_id


def test_increment_id_updates_a_pending_message(app, api):
    api.post(
        "/v1/templates",
        json={
            "name": "likes",
            "channels": {
                "inapp": {"en": {"title": "New likes", "body": "{{ params.who }} liked it"}}
            },
        },
    )
    ids = [
        api.post(
            "/v1/messages",
            json={"template": "likes", "userId": "u", "data": {"who": who}, "incrementId": "p"},
        ).json["messageIds"][0]
        for who in ("Ann", "Bob", "Cy")
    ]
    assert len(set(ids)) == 1  # no workers running: all three stacked into one row
    [message] = _messages(app)
    assert message.increment_count == 3 and message.content == {"who": "Cy"}


def test_overrides_are_rendered_like_the_template(app, api, workers):
    api.post("/v1/templates", json=TEMPLATE)
    r = api.post(
        "/v1/messages",
        json={
            "template": "order-shipped",
            "userId": "u",
            "data": {"order": "A-7"},
            "overrides": {"inapp": {"title": "{{ params.order }} is out", "url": "/o/A-7"}},
        },
    )
    assert r.status_code == 200, r.json
    wait_for(lambda: [m.status for m in _messages(app)] == ["sent"])
    [message] = _messages(app)
    assert message.rendered["title"] == "A-7 is out"  # was sent as "{{ params.order }} is out"
    assert message.rendered["body"] == "Order A-7 is on its way"
    assert message.rendered["url"] == "/o/A-7"
