"""Delivery outcomes become internal events of the message's user (`message.delivered`, ...).

Each outcome is reached through its real entry point: a service worker's receipt, Twilio's
signed status callback, the signed open/click links, an in-app read (`POST /v1/inbox/{id}/read`,
`read-all`), a permanent provider failure, one-click unsubscribe, an SMS STOP and an email
complaint. Each yields exactly one event with the
campaign and channel, however often the report is repeated, and hands it to the processor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from urllib.parse import urlsplit

import dramatiq
import pytest
from sqlalchemy import select

from app.db import db
from app.models import Event, MessageEvent, User
from app.models.base import utcnow
from app.models.message import Message, MessageStatusChange, Send
from app.services import links
from app.services.projects import user_hash
from tests.conftest import wait_for
from tests.support.twilio_peer import Answer, TwilioPeer, twilio_error, twilio_sign
from workers.broker import broker

PUBLIC = "https://cairn.example.com"
PHONE = "+14155550123"
SENDER = "+14155550100"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
CAMPAIGN = 77


def _user(app, api, external: str = "ann", **fields: str) -> int:
    r = api.post("/v1/users", json={"userId": external, **fields})
    assert r.status_code in (200, 201), r.json
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.external_id == external))


def _sent(
    app,
    project_id: int,
    user_id: int | None,
    *,
    channel: str = "push",
    address: str = "1",
    campaign_id: int | None = CAMPAIGN,
) -> tuple[int, int]:
    """A message of a campaign send that left five minutes ago: (message id, send id)."""
    with app.app_context(), db.begin() as session:
        send = Send(project_id=project_id, kind="campaign", campaign_id=campaign_id)
        session.add(send)
        session.flush()
        message = Message(
            project_id=project_id,
            send_id=send.id,
            user_id=user_id,
            channel=channel,
            address=address,
            status="sent",
            provider="test",
            sent_at=utcnow() - timedelta(minutes=5),
        )
        session.add(message)
        session.flush()
        return message.id, send.id


def _internal(app) -> list[Event]:
    with app.app_context():
        return list(
            db.session.scalars(select(Event).where(Event.source == "internal").order_by(Event.id))
        )


def _deferred_event_ids() -> list[int]:
    """The event ids in process_events jobs waiting in the stub broker (no workers running)."""
    queue = broker.queues.get("events")
    ids: list[int] = []
    while queue is not None and not queue.empty():
        job = dramatiq.Message.decode(queue.get_nowait())
        assert job.actor_name == "process_events"
        ids.extend(job.args[0])
    return ids


def _status_time(app, message_id: int, status: str):
    with app.app_context():
        return db.session.scalar(
            select(MessageStatusChange.at).where(
                MessageStatusChange.message_id == message_id, MessageStatusChange.status == status
            )
        )


@pytest.fixture
def clean_broker():
    """Start with no queued jobs, so the deferred process_events jobs can be read back."""
    broker.flush_all()
    yield
    broker.flush_all()


# --- delivered ---------------------------------------------------------------------------


def _receipt(client, project, message_id: int):
    body = json.dumps({"key": project.publishable, "kind": "delivered", "messageId": message_id})
    return client.post("/sdk/events", data=body, headers={"Content-Type": "text/plain"})


def test_a_push_receipt_yields_one_delivered_event_for_the_processor(
    app, api, client, project, clean_broker
):
    user_id = _user(app, api)
    message_id, send_id = _sent(app, project.id, user_id)
    for _ in range(3):  # a worker reporting again changes nothing
        assert _receipt(client, project, message_id).status_code == 200
    [event] = _internal(app)
    assert (event.name, event.user_id, event.project_id) == (
        "message.delivered",
        user_id,
        project.id,
    )
    assert event.properties == {
        "messageId": message_id,
        "sendId": send_id,
        "campaignId": CAMPAIGN,
        "channel": "push",
    }
    assert event.timestamp == _status_time(app, message_id, "delivered")
    assert event.processed_at is None
    assert _deferred_event_ids() == [event.id]


def test_a_message_without_a_user_yields_no_event(app, client, project, clean_broker):
    message_id, _ = _sent(app, project.id, None, campaign_id=None)
    assert _receipt(client, project, message_id).json == {"recorded": True}
    assert _internal(app) == []
    assert _deferred_event_ids() == []


@pytest.fixture
def twilio(app):
    """A Twilio peer, the app's settings pointing at it (before the workers start)."""
    peer = TwilioPeer().start()
    app.config.update(
        TWILIO_ACCOUNT_SID=peer.account_sid,
        TWILIO_AUTH_TOKEN=peer.auth_token,
        TWILIO_FROM=SENDER,
        TWILIO_BASE_URL=peer.url,
        PUBLIC_URL=PUBLIC,
    )
    yield peer
    peer.stop()


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def _notify_sms(app, api, body: str = "hello") -> int:
    _user(app, api, "u", phone=PHONE)
    r = api.post("/v1/notify", json={"userId": "u", "body": body, "channels": ["sms"]})
    assert r.status_code == 202, r.json
    [message_id] = r.json["messageIds"]
    return message_id


def _status_callback(client, token: str, message_id: int, sid: str, status: str, **extra):
    params = {
        "AccountSid": "AC" + "0" * 32,
        "MessageSid": sid,
        "MessageStatus": status,
        "To": PHONE,
        "From": SENDER,
        **extra,
    }
    path = f"/webhooks/twilio/status?m={message_id}"
    signature = twilio_sign(token, PUBLIC + path, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def test_a_repeated_twilio_delivery_report_yields_one_delivered_event(
    twilio, app, api, client, workers
):
    message_id = _notify_sms(app, api)
    [message] = wait_for(lambda: [m for m in _messages(app) if m.status == "sent"] or None)
    for status in ("delivered", "delivered", "undelivered"):
        r = _status_callback(
            client, twilio.auth_token, message_id, message.provider_id, status, ErrorCode="30003"
        )
        assert r.status_code == 204
    [event] = _internal(app)
    assert event.name == "message.delivered"
    assert event.user_id == message.user_id
    assert event.properties == {
        "messageId": message_id,
        "sendId": message.send_id,
        "campaignId": None,
        "channel": "sms",
    }
    assert event.timestamp == _status_time(app, message_id, "delivered")


# --- opened and clicked ------------------------------------------------------------------


def _path(url: str) -> str:
    return urlsplit(url).path


def test_signed_open_and_click_links_yield_one_opened_and_one_clicked_event(
    app, api, client, project, clean_broker
):
    user_id = _user(app, api, email="ann@example.com")
    message_id, send_id = _sent(
        app, project.id, user_id, channel="email", address="ann@example.com"
    )
    settings = dict(app.config)
    pixel = _path(links.open_url(settings, message_id))
    click = _path(links.click_url(settings, message_id, "https://shop.acme-mail.com/sale"))
    for _ in range(2):
        assert client.get(pixel, headers={"User-Agent": BROWSER}).status_code == 200
        assert client.get(click, headers={"User-Agent": BROWSER}).status_code == 302
    events = _internal(app)
    assert [e.name for e in events] == ["message.opened", "message.clicked"]
    for event, status in zip(events, ("opened", "clicked"), strict=True):
        assert event.user_id == user_id
        assert event.properties == {
            "messageId": message_id,
            "sendId": send_id,
            "campaignId": CAMPAIGN,
            "channel": "email",
        }
        assert event.timestamp == _status_time(app, message_id, status)
    assert sorted(_deferred_event_ids()) == [e.id for e in events]


def test_a_machine_open_yields_no_event(app, api, client, project, clean_broker):
    user_id = _user(app, api, email="ann@example.com")
    message_id, _ = _sent(app, project.id, user_id, channel="email", address="ann@example.com")
    pixel = _path(links.open_url(dict(app.config), message_id))
    assert client.get(pixel, headers={"User-Agent": "GoogleImageProxy"}).status_code == 200
    assert _internal(app) == []


# --- failed ------------------------------------------------------------------------------


def test_a_permanent_failure_yields_one_failed_event_and_a_retry_none(
    twilio, app, api, workers, sweeper
):
    twilio.plan(
        Answer(500, {"code": 20500, "message": "Internal Server Error"}, {"Retry-After": "1"}),
        twilio_error(400, 21408, "Permission to send an SMS has not been enabled"),
    )
    message_id = _notify_sms(app, api)
    wait_for(lambda: _messages(app)[0].reason == "retrying: twilio 20500: Internal Server Error")
    assert _internal(app) == []  # a retry is no outcome

    def failed():
        sweeper()
        return [m for m in _messages(app) if m.status == "failed"]

    [message] = wait_for(failed)
    [event] = _internal(app)  # written with the failure, in one transaction
    assert event.name == "message.failed"
    assert event.user_id == message.user_id
    assert event.properties == {
        "messageId": message_id,
        "sendId": message.send_id,
        "campaignId": None,
        "channel": "sms",
        "reason": "twilio 21408: Permission to send an SMS has not been enabled",
    }
    assert event.timestamp == _status_time(app, message_id, "failed")


# --- unsubscribed ------------------------------------------------------------------------


def test_one_click_unsubscribe_yields_one_unsubscribed_event(
    app, api, client, project, clean_broker
):
    user_id = _user(app, api, email="ann@example.com")
    message_id, send_id = _sent(
        app, project.id, user_id, channel="email", address="ann@example.com"
    )
    path = _path(
        links.unsubscribe_url(
            dict(app.config),
            project_id=project.id,
            channel="email",
            address="ann@example.com",
            message_id=message_id,
        )
    )
    assert client.get(path).status_code == 200  # the confirmation page changes nothing
    assert _internal(app) == []
    for _ in range(2):
        r = client.post(
            path,
            data="List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
        )
        assert r.status_code == 200
    [event] = _internal(app)
    assert event.name == "message.unsubscribed"
    assert event.user_id == user_id
    assert event.properties == {
        "messageId": message_id,
        "sendId": send_id,
        "campaignId": CAMPAIGN,
        "channel": "email",
        "reason": "link",
    }
    with app.app_context():
        at = db.session.scalar(
            select(MessageEvent.at).where(
                MessageEvent.message_id == message_id, MessageEvent.kind == "unsubscribe"
            )
        )
    assert event.timestamp == at
    assert _deferred_event_ids() == [event.id]


def test_an_sms_stop_unsubscribes_through_the_last_sms_sent(app, api, client, project):
    app.config.update(TWILIO_AUTH_TOKEN="tok-inbound", PUBLIC_URL=PUBLIC, TWILIO_FROM=SENDER)
    user_id = _user(app, api, phone=PHONE)
    _sent(app, project.id, user_id, channel="sms", address=PHONE)
    last, send_id = _sent(app, project.id, user_id, channel="sms", address=PHONE)
    params = {"AccountSid": "AC" + "0" * 32, "From": PHONE, "To": SENDER, "Body": "STOP"}
    for _ in range(2):
        signature = twilio_sign("tok-inbound", PUBLIC + "/webhooks/twilio/inbound", params)
        r = client.post(
            "/webhooks/twilio/inbound", data=params, headers={"X-Twilio-Signature": signature}
        )
        assert r.status_code == 200
    [event] = _internal(app)
    assert event.name == "message.unsubscribed"
    assert event.user_id == user_id
    assert event.properties == {
        "messageId": last,
        "sendId": send_id,
        "campaignId": CAMPAIGN,
        "channel": "sms",
        "reason": "stop",
    }


def test_an_email_complaint_unsubscribes_through_the_message(app, api, client, project):
    secret = "whsec-0123456789abcdef"
    app.config["EMAIL_WEBHOOK_SECRET"] = secret
    user_id = _user(app, api, email="ann@example.com")
    message_id, send_id = _sent(
        app, project.id, user_id, channel="email", address="ann@example.com"
    )
    body = json.dumps({"type": "complaint", "email": "ann@example.com"}).encode()
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Cairn-Signature": "sha256=" + mac, "Content-Type": "application/json"}
    for _ in range(2):
        r = client.post("/webhooks/email/generic", data=body, headers=headers)
        assert r.json == {"ok": True, "applied": 1}
    [event] = _internal(app)
    assert event.name == "message.unsubscribed"
    assert event.properties == {
        "messageId": message_id,
        "sendId": send_id,
        "campaignId": CAMPAIGN,
        "channel": "email",
        "reason": "complaint",
    }


# --- in-app reads ------------------------------------------------------------------------


def _end_user(project, external: str = "ann") -> dict[str, str]:
    return {
        "key": project.publishable,
        "userId": external,
        "userHash": user_hash(project.identity_secret, external),
    }


def _history(app, message_id: int) -> list[str]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(MessageStatusChange.status)
                .where(MessageStatusChange.message_id == message_id)
                .order_by(MessageStatusChange.id)
            )
        )


def _inapp(app, project_id: int, user_id: int, **fields) -> tuple[int, int]:
    return _sent(app, project_id, user_id, channel="inapp", address=f"user:{user_id}", **fields)


def test_an_inapp_read_yields_one_opened_event_and_one_history_row(
    app, api, client, project, clean_broker
):
    """POST /v1/inbox/{id}/read is the in-app open: the status history row and the internal
    `message.opened` event with the campaign and channel, as an email's pixel gives; reading
    again (by id or with read-all) adds nothing."""
    user_id = _user(app, api)
    message_id, send_id = _inapp(app, project.id, user_id)
    params = _end_user(project)
    first = client.post(f"/v1/inbox/{message_id}/read", query_string=params)
    assert first.status_code == 200 and first.json == {"updated": 1}
    again = client.post(f"/v1/inbox/{message_id}/read", query_string=params)
    assert again.status_code == 200 and again.json == {"updated": 0}
    assert client.post("/v1/inbox/read-all", query_string=params).json == {"updated": 0}
    [event] = _internal(app)
    assert (event.name, event.user_id, event.project_id) == ("message.opened", user_id, project.id)
    assert event.properties == {
        "messageId": message_id,
        "sendId": send_id,
        "campaignId": CAMPAIGN,
        "channel": "inapp",
    }
    assert _history(app, message_id) == ["opened"]
    assert event.timestamp == _status_time(app, message_id, "opened")
    with app.app_context():
        message = db.session.get(Message, message_id)
        assert message.status == "opened" and message.read_at == event.timestamp
    assert _deferred_event_ids() == [event.id]
    detail = api.get(f"/v1/messages/{message_id}").json
    assert [h["status"] for h in detail["history"]][-1] == "opened"


def test_read_all_opens_each_unread_message_once(app, api, client, project, clean_broker):
    user_id = _user(app, api)
    read_first, _ = _inapp(app, project.id, user_id)
    others = [_inapp(app, project.id, user_id)[0] for _ in range(3)]
    other_campaign, _ = _inapp(app, project.id, user_id, campaign_id=None)
    params = _end_user(project)
    assert client.post(f"/v1/inbox/{read_first}/read", query_string=params).json["updated"] == 1
    assert client.post("/v1/inbox/read-all", query_string=params).json == {"updated": 4}
    assert client.post("/v1/inbox/read-all", query_string=params).json == {"updated": 0}
    events = _internal(app)
    assert [e.name for e in events] == ["message.opened"] * 5
    assert sorted(e.properties["messageId"] for e in events) == sorted(
        [read_first, *others, other_campaign]
    )
    assert {e.properties["messageId"]: e.properties["campaignId"] for e in events} == {
        read_first: CAMPAIGN,
        **dict.fromkeys(others, CAMPAIGN),
        other_campaign: None,
    }
    for message_id in (read_first, *others, other_campaign):
        assert _history(app, message_id) == ["opened"]
    assert sorted(_deferred_event_ids()) == [e.id for e in events]


def test_an_inapp_read_right_after_sending_is_a_persons_open(
    app, api, client, project, clean_broker
):
    """engagement.TOO_FAST filters machines fetching a pixel; a read through the inbox API is
    the end user's own action (their userHash), so it counts however soon it comes."""
    user_id = _user(app, api)
    message_id, _ = _inapp(app, project.id, user_id)
    with app.app_context(), db.begin() as session:
        session.get(Message, message_id).sent_at = utcnow()
    r = client.post(f"/v1/inbox/{message_id}/read", query_string=_end_user(project))
    assert r.json == {"updated": 1}
    assert [e.name for e in _internal(app)] == ["message.opened"]


def test_an_inapp_read_after_a_click_keeps_clicked_and_emits_no_open(
    app, api, client, project, clean_broker
):
    """Statuses only move forward: a read after the in-app link was followed marks it read
    (the unread count drops) but emits no `message.opened`, as an email opened after its
    click does. (It used to set the status back to `opened`.)"""
    user_id = _user(app, api)
    message_id, _ = _inapp(app, project.id, user_id)
    click = _path(links.click_url(dict(app.config), message_id, "https://shop.acme-mail.com/x"))
    assert client.get(click, headers={"User-Agent": BROWSER}).status_code == 302
    params = _end_user(project)
    assert client.post(f"/v1/inbox/{message_id}/read", query_string=params).json["updated"] == 1
    assert client.get("/v1/inbox", query_string=params).json["unreadCount"] == 0
    assert [e.name for e in _internal(app)] == ["message.clicked"]
    assert _history(app, message_id) == ["clicked"]
    with app.app_context():
        assert db.session.get(Message, message_id).status == "clicked"


def test_reading_someone_elses_message_is_refused_and_records_nothing(
    app, api, client, project, clean_broker
):
    _user(app, api, "ann")
    bob = _user(app, api, "bob")
    message_id, _ = _inapp(app, project.id, bob)
    r = client.post(f"/v1/inbox/{message_id}/read", query_string=_end_user(project, "ann"))
    assert r.status_code == 404 and r.json["errors"] == {"messageId": ["not found"]}
    assert client.post("/v1/inbox/read-all", query_string=_end_user(project, "ann")).json == {
        "updated": 0
    }
    assert _internal(app) == []
    assert _history(app, message_id) == []
    with app.app_context():
        message = db.session.get(Message, message_id)
        assert (message.status, message.read_at) == ("sent", None)


def test_an_archived_message_read_later_is_opened_once(app, api, client, project, clean_broker):
    """Archiving is not reading (no event); the archive is listed too (`?archived=1`), and a
    read there is an open like any other, once. (Reading an archived message was allowed
    before this change too: `_visible` never excluded the archive.)"""
    user_id = _user(app, api)
    message_id, _ = _inapp(app, project.id, user_id)
    params = _end_user(project)
    assert client.post(f"/v1/inbox/{message_id}/archive", query_string=params).json == {
        "updated": 1
    }
    assert _internal(app) == []
    for expected in (1, 0):
        r = client.post(f"/v1/inbox/{message_id}/read", query_string=params)
        assert r.json == {"updated": expected}
    assert [e.name for e in _internal(app)] == ["message.opened"]
    assert _history(app, message_id) == ["opened"]
