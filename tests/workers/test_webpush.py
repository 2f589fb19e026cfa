"""Web push through the real pipeline, against a local push service that decrypts every
payload with the subscriber's keys and verifies every VAPID JWT (tests/support/push_service)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.db import db
from app.models.base import utcnow
from app.models.channels import PushSubscription
from app.models.message import Message, MessageStatusChange, Send
from app.services.projects import user_hash
from tests.conftest import wait_for
from tests.support.push_service import PushService, Subscriber
from workers.channels.base import Delivery, ProviderContext, Retry
from workers.channels.providers import provider_for
from workers.channels.providers.webpush import (
    DEFAULT_TTL,
    FAILURE_LIMIT,
    MAX_PAYLOAD,
    WebPushProvider,
    endpoint_problem,
    topic_of,
    ttl_of,
)

SUBJECT = "mailto:push-ops@acme-mail.com"


@pytest.fixture
def service():
    """The local push service."""
    with PushService() as push:
        yield push


@pytest.fixture
def push(app, api, service, request):
    """A project with a VAPID subject, then the worker threads."""
    r = api.patch("/v1/project", json={"settings": {"push": {"vapidSubject": SUBJECT}}})
    assert r.status_code == 200, r.json
    request.getfixturevalue("workers")
    return service


def subscribe(api, service: PushService, user: str | None = "ann", **body) -> Subscriber:
    """A browser subscribing with the project's current key (through the API, secret key)."""
    key = api.get("/v1/push/vapid-key").json["publicKey"]
    sub = service.subscriber(server_key=key)
    payload = {"subscription": sub.subscription(), **body}
    if user is not None:
        payload["userId"] = user
    r = api.post("/v1/push/subscriptions", json=payload)
    assert r.status_code == 200, r.json
    return sub


def notify(api, user: str = "ann", **extra):
    body = {"userId": user, "title": "Hello", "body": "Spring news", "channels": ["push"]}
    r = api.post("/v1/notify", json={**body, **extra})
    assert r.status_code == 202, r.json
    return r.json


def messages(app, **where) -> list[Message]:
    with app.app_context():
        stmt = select(Message).where(Message.channel == "push").order_by(Message.id)
        for name, value in where.items():
            stmt = stmt.where(getattr(Message, name) == value)
        return list(db.session.scalars(stmt))


def device(app, sub: Subscriber) -> PushSubscription:
    with app.app_context():
        row = db.session.scalar(
            select(PushSubscription).where(PushSubscription.endpoint == sub.endpoint)
        )
        assert row is not None
        return row


def settled(app, send_id: int, count: int) -> list[Message]:
    """Wait until the send's `count` messages are all final."""

    def done():
        rows = messages(app, send_id=send_id)
        return (
            rows
            if len(rows) == count
            and all(m.status != "queued" and m.status != "sending" for m in rows)
            else None
        )

    return wait_for(done)


def test_the_webpush_provider_is_the_default_of_push(app):
    assert provider_for("push", dict(app.config), {}) == "webpush"


def test_a_user_with_two_devices_gets_two_decrypted_notifications(app, api, push):
    phone, laptop = subscribe(api, push), subscribe(api, push)
    sent = notify(api, url="https://acme-shop.com/spring", data={"sku": "42"})
    assert sent["messages"] == 2
    wait_for(lambda: len(push.received) == 2)
    by_device = {r.token: r for r in push.received}
    assert set(by_device) == {phone.token, laptop.token}
    for got in by_device.values():
        assert got.payload["title"] == "Hello" and got.payload["body"] == "Spring news"
        assert got.payload["data"] == {"sku": "42"}
        # The url opens through the signed click-tracking link.
        assert got.payload["url"].startswith(app.config["PUBLIC_URL"] + "/t/c/")
        assert got.claims["aud"] == push.origin and got.claims["sub"] == SUBJECT
        assert DEFAULT_TTL - 120 <= got.ttl <= DEFAULT_TTL
        assert got.urgency is None and got.topic is None
    # One notification tag for the send (two subscriptions in one browser show one), one
    # message id per device.
    assert len({r.payload["tag"] for r in push.received}) == 1
    assert len({r.payload["messageId"] for r in push.received}) == 2
    rows = settled(app, sent["id"], 2)
    assert {m.status for m in rows} == {"sent"}
    assert {m.address for m in rows} == {str(device(app, phone).id), str(device(app, laptop).id)}
    assert all(m.provider == "webpush" and m.provider_id.startswith(push.origin) for m in rows)


def test_ttl_is_what_remains_of_the_message(app, api, push):
    subscribe(api, push)
    notify(api, ttlSeconds=600)
    wait_for(lambda: push.received)
    assert 500 < push.received[0].ttl <= 600


def test_ttl_never_becomes_zero_by_accident():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert ttl_of(None, now) == DEFAULT_TTL
    assert ttl_of(now + timedelta(milliseconds=10), now) == 1
    assert ttl_of(now + timedelta(seconds=90.2), now) == 91
    assert ttl_of(now, now) is None and ttl_of(now - timedelta(seconds=1), now) is None
    assert ttl_of((now + timedelta(seconds=30)).replace(tzinfo=None), now) == 30


def test_topic_is_at_most_32_url_safe_characters():
    assert topic_of("order-42_a") == "order-42_a"
    for key in ("a" * 33, "order 42/é", "x.y"):
        topic = topic_of(key)
        assert len(topic) <= 32 and topic.replace("-", "").replace("_", "").isalnum()
    assert topic_of("order 42/é") == topic_of("order 42/é")


def test_a_segment_send_and_a_broadcast_fan_out_to_every_device(app, api, push):
    for user, plan in (("ann", "pro"), ("bob", "pro"), ("cy", "free"), ("dee", "pro")):
        r = api.post("/v1/users", json={"userId": user, "attributes": {"plan": plan}})
        assert r.status_code == 200, r.json
    ann = [subscribe(api, push, "ann"), subscribe(api, push, "ann")]
    bob = subscribe(api, push, "bob")
    subscribe(api, push, "cy")
    # dee has no device: unreachable on push, no message.
    r = api.post(
        "/v1/notify",
        json={"segment": "plan:pro", "title": "Pro", "body": "news", "channels": ["push"]},
    )
    assert r.status_code == 202, r.json
    rows = settled(app, r.json["id"], 3)
    assert {m.status for m in rows} == {"sent"}
    wait_for(lambda: len(push.received) == 3)
    assert {x.token for x in push.received} == {ann[0].token, ann[1].token, bob.token}
    r = api.post(
        "/v1/notify",
        json={"broadcast": True, "title": "All", "body": "hands", "channels": ["push"]},
    )
    assert r.status_code == 202, r.json
    settled(app, r.json["id"], 4)
    wait_for(lambda: len(push.received) == 7)


def test_the_same_send_never_reaches_the_same_device_twice(app, api, push):
    from workers.fanout import fan_out

    api.post("/v1/users", json={"userId": "ann", "attributes": {"plan": "pro"}})
    subscribe(api, push)
    subscribe(api, push)
    r = api.post(
        "/v1/notify",
        json={"segment": "plan:pro", "title": "Once", "body": "only", "channels": ["push"]},
    )
    send_id = r.json["id"]
    settled(app, send_id, 2)
    # The fan-out runs again from the start (a crashed worker's lease handed on, say).
    with app.app_context():
        send = db.session.get(Send, send_id)
        send.status, send.cursor = "fanning_out", 0
        db.session.commit()
        assert fan_out(db.session, send_id) == 0
        db.session.expire_all()
        assert db.session.get(Send, send_id).deduplicated == 2
    assert len(messages(app, send_id=send_id)) == 2
    time.sleep(0.5)
    assert len(push.received) == 2


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_subscription_deactivates_exactly_that_device(app, api, push, status):
    gone, kept = subscribe(api, push), subscribe(api, push)
    push.answer(gone, status)
    sent = notify(api)
    rows = {m.address: m for m in settled(app, sent["id"], 2)}
    dead = rows[str(device(app, gone).id)]
    assert dead.status == "failed" and f"subscription gone ({status}" in dead.reason
    assert rows[str(device(app, kept).id)].status == "sent"
    row = device(app, gone)
    assert not row.active and f"({status}" in row.deactivated_reason
    assert device(app, kept).active
    # The next send reaches only the live device; the dead one is not even a message.
    again = notify(api)
    assert again["messages"] == 1
    settled(app, again["id"], 1)
    assert push.answered(gone) == [status]
    assert len(push.for_subscriber(kept)) == 2


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_retry_after_retry_after(app, api, push, sweeper, status):
    sub = subscribe(api, push)
    push.answer(sub, status, retry_after="1")
    sent = notify(api)

    def retried():
        sweeper()  # enqueues the message again once its not_before has passed
        rows = messages(app, send_id=sent["id"])
        return rows if rows and rows[0].status == "sent" else None

    [row] = wait_for(retried)
    assert push.answered(sub) == [status, 201]
    with app.app_context():
        history = list(
            db.session.scalars(
                select(MessageStatusChange)
                .where(MessageStatusChange.message_id == row.id)
                .order_by(MessageStatusChange.id)
            )
        )
    queued = [h for h in history if h.status == "queued"]
    assert queued and f"push service answered {status}" in queued[0].reason
    assert row.attempts == 2


def test_413_fails_as_too_large_without_a_retry(app, api, push):
    sub = subscribe(api, push)
    push.answer(sub, 413)
    sent = notify(api)
    [row] = settled(app, sent["id"], 1)
    assert row.status == "failed" and "too large" in row.reason
    assert push.answered(sub) == [413]
    assert device(app, sub).active and device(app, sub).failures == 0


@pytest.mark.parametrize("status", [400, 401, 403])
def test_400_401_403_fail_with_the_reason_and_no_retry(app, api, push, status):
    sub = subscribe(api, push)
    push.answer(sub, status)
    sent = notify(api)
    [row] = settled(app, sent["id"], 1)
    assert row.status == "failed" and f"refused it ({status}: scripted)" in row.reason
    assert row.attempts == 1 and push.answered(sub) == [status]
    assert device(app, sub).active and device(app, sub).failures == 1


def test_a_device_that_keeps_failing_is_deactivated_and_a_success_resets_the_count(app, api, push):
    flaky, broken = subscribe(api, push), subscribe(api, push)
    push.answer(flaky, 403, times=FAILURE_LIMIT - 1)
    push.answer(broken, 403, times=FAILURE_LIMIT)
    for _ in range(FAILURE_LIMIT - 1):
        settled(app, notify(api)["id"], 2)
    assert device(app, flaky).failures == FAILURE_LIMIT - 1
    settled(app, notify(api)["id"], 2)
    # flaky got through at last (count back to 0); broken failed a fifth time in a row.
    assert device(app, flaky).failures == 0 and device(app, flaky).active
    row = device(app, broken)
    assert not row.active and f"{FAILURE_LIMIT} permanent failures in a row" in (
        row.deactivated_reason
    )
    assert notify(api)["messages"] == 1


def test_a_payload_over_4kb_is_refused_with_a_reason_and_not_sent(app, api, push):
    subscribe(api, push)
    sent = notify(api, body="x" * (MAX_PAYLOAD + 10))
    [row] = settled(app, sent["id"], 1)
    assert row.status == "failed" and "payload too large" in row.reason
    assert push.requests == 0


def test_the_vapid_jwt_is_signed_once_per_origin_and_reused(app, api, push):
    subscribe(api, push)
    subscribe(api, push, "bob")
    for _ in range(3):
        notify(api)
        notify(api, "bob")
    wait_for(lambda: len(push.received) == 6)
    assert len({r.jwt for r in push.received}) == 1
    exp = push.received[0].claims["exp"]
    assert time.time() + 12 * 3600 < exp <= time.time() + 24 * 3600


def test_a_key_rotation_keeps_old_subscriptions_working(app, api, push):
    from click.testing import Result

    from app.cli import cli

    old = subscribe(api, push)
    old_key = api.get("/v1/push/vapid-key").json["publicKey"]
    result: Result = app.test_cli_runner().invoke(cli, ["vapid", "generate"])
    assert result.exit_code == 0, result.output
    new_key = api.get("/v1/push/vapid-key").json["publicKey"]
    assert new_key != old_key and new_key in result.output
    new = subscribe(api, push)
    assert new.server_key == new_key
    notify(api)
    wait_for(lambda: len(push.received) == 2)
    keys = {r.token: r.key for r in push.received}
    # Each device is signed with the key it subscribed with (a push service refuses others).
    assert keys == {old.token: old_key, new.token: new_key}
    # Re-subscribing the old device (page load) does not move it onto the new key.
    api.post("/v1/push/subscriptions", json={"userId": "ann", "subscription": old.subscription()})
    notify(api)
    wait_for(lambda: len(push.received) == 4)
    assert not [a for a in push.answers if a[1] != 201]


def test_without_a_vapid_subject_push_fails_with_a_clear_reason(app, api, service, workers):
    subscribe(api, service)
    sent = notify(api)
    [row] = settled(app, sent["id"], 1)
    assert row.status == "failed" and "set VAPID_SUBJECT" in row.reason
    assert service.requests == 0


def test_vapid_subject_from_the_environment(app, api, service, request):
    app.config["VAPID_SUBJECT"] = "https://acme-shop.com/contact"
    request.getfixturevalue("workers")
    subscribe(api, service)
    notify(api)
    wait_for(lambda: service.received)
    assert service.received[0].claims["sub"] == "https://acme-shop.com/contact"


def test_an_anonymous_visitors_devices_follow_them_on_a_verified_identify(app, api, push, project):
    pk = {"Authorization": f"Bearer {project.publishable}"}
    sub = push.subscriber(server_key=api.get("/v1/push/vapid-key").json["publicKey"])
    r = api.post(
        "/v1/push/subscriptions",
        json={"anonymousId": "visitor-1", "subscription": sub.subscription()},
        headers=pk,
    )
    assert r.status_code == 200 and r.json["anonymous"], r.json
    assert notify(api)["messages"] == 0  # nobody called ann has a device yet
    r = api.post(
        "/v1/identify",
        json={
            "userId": "ann",
            "anonymousId": "visitor-1",
            "userHash": user_hash(project.identity_secret, "ann"),
        },
        headers=pk,
    )
    assert r.status_code in (200, 202), r.json
    assert notify(api)["messages"] == 1
    wait_for(lambda: len(push.received) == 1)


def test_an_unverified_identify_detaches_the_visitors_device(app, api, push, project):
    pk = {"Authorization": f"Bearer {project.publishable}"}
    sub = push.subscriber(server_key=api.get("/v1/push/vapid-key").json["publicKey"])
    api.post(
        "/v1/push/subscriptions",
        json={"anonymousId": "visitor-2", "subscription": sub.subscription()},
        headers=pk,
    )
    r = api.post("/v1/identify", json={"userId": "ann", "anonymousId": "visitor-2"}, headers=pk)
    assert r.status_code in (200, 202), r.json
    # The visitor's events merged, but the device went to nobody rather than to ann.
    assert device(app, sub).user_id is None
    assert notify(api)["messages"] == 0


def test_one_send_to_several_devices_counts_once_against_the_frequency_cap(app, api, push):
    r = api.patch(
        "/v1/project", json={"settings": {"frequencyCap": {"count": 1, "windowSeconds": 3600}}}
    )
    assert r.status_code == 200, r.json
    subscribe(api, push)
    subscribe(api, push)
    subscribe(api, push)
    first = settled(app, notify(api)["id"], 3)
    assert {m.status for m in first} == {"sent"}
    second = settled(app, notify(api)["id"], 3)
    assert {m.status for m in second} == {"suppressed"}


# --- the provider on its own, against the same push service ------------------------------


def _delivery(sub_row: PushSubscription, key, **extra) -> Delivery:
    base = {
        "message_id": 1,
        "project_id": sub_row.project_id,
        "user_id": sub_row.user_id,
        "channel": "push",
        "address": str(sub_row.id),
        "content": {"title": "T", "body": "B"},
        "target": {
            "subscription_id": sub_row.id,
            "user_id": sub_row.user_id,
            "endpoint": sub_row.endpoint,
            "p256dh": sub_row.p256dh,
            "auth": sub_row.auth,
            "failures": 0,
            "vapid_key_id": key.id,
            "vapid_public_key": key.public_key,
            "vapid_private_key": key.private_key,
        },
    }
    return Delivery(**{**base, **extra})


def _row_and_key(app, sub):
    from app.models.channels import VapidKey

    row = device(app, sub)
    with app.app_context():
        return row, db.session.get(VapidKey, row.vapid_key_id)


def test_urgency_and_topic_headers(app, api, service):
    sub = subscribe(api, service)
    row, key = _row_and_key(app, sub)
    provider = WebPushProvider()
    ctx = ProviderContext(
        settings={**app.config, "VAPID_SUBJECT": SUBJECT, "ALLOW_PRIVATE_ENDPOINTS": True}
    )
    result = provider.send(
        _delivery(row, key, urgency="high", increment_id="cart 42 / reminder"), ctx
    )
    assert result.status == "sent", result.reason
    [got] = service.received
    assert got.urgency == "high" and got.topic == topic_of("cart 42 / reminder")
    assert got.payload["tag"] == "cart 42 / reminder"
    expired = _delivery(row, key, expires_at=utcnow() - timedelta(seconds=1))
    assert provider.send(expired, ctx).status == "failed"


def test_a_private_or_http_endpoint_is_refused_at_send_time(app, api, service):
    sub = subscribe(api, service)  # stored while private endpoints were allowed
    row, key = _row_and_key(app, sub)
    ctx = ProviderContext(
        settings={**app.config, "VAPID_SUBJECT": SUBJECT, "ALLOW_PRIVATE_ENDPOINTS": False}
    )
    result = WebPushProvider().send(_delivery(row, key), ctx)
    assert result.status == "failed" and "endpoint refused" in result.reason
    assert service.requests == 0


def test_timeouts_and_connection_errors_retry(app, api, service):
    sub = subscribe(api, service)
    row, key = _row_and_key(app, sub)
    ctx = ProviderContext(
        settings={**app.config, "VAPID_SUBJECT": SUBJECT, "ALLOW_PRIVATE_ENDPOINTS": True}
    )
    service.stop()
    with pytest.raises(Retry, match="push service unreachable"):
        WebPushProvider().send(_delivery(row, key), ctx)


def test_endpoint_rules():
    assert endpoint_problem("https://8.8.8.8/push/x", allow_private=False) is None
    for url in (
        "http://8.8.8.8/push/x",
        "https://127.0.0.1/push/x",
        "https://10.1.2.3/push/x",
        "https://169.254.169.254/latest",
        "https://[::1]/push",
        "https://[::ffff:127.0.0.1]/push",
        "https://localhost/push",
        "https://user:pw@8.8.8.8/push",
        "ftp://8.8.8.8/x",
        "not a url",
    ):
        assert endpoint_problem(url, allow_private=False) is not None, url
    assert endpoint_problem("http://127.0.0.1:9/push", allow_private=True) is None
    assert endpoint_problem("file:///etc/passwd", allow_private=True) is not None


def test_a_public_endpoint_is_pinned_to_the_address_that_was_checked(monkeypatch):
    import socket

    from workers.channels.providers import webpush

    answers = {"push.acme-shop.com": "8.8.4.4"}

    def resolve(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(webpush.socket, "getaddrinfo", resolve)
    provider = WebPushProvider()
    endpoint = "https://push.acme-shop.com/send/abc"
    assert provider.hosts.check(endpoint, False) == (None, "8.8.4.4")
    pool = provider.pool_for("https://push.acme-shop.com", "8.8.4.4")
    # Connects to the checked address, verifies the certificate for the name.
    assert pool.host == "8.8.4.4"
    assert pool.conn_kw["server_hostname"] == "push.acme-shop.com"
    assert pool.assert_hostname == "push.acme-shop.com"
    # DNS now answers a private address (rebinding): a fresh check refuses the endpoint.
    answers["push.acme-shop.com"] = "10.0.0.5"
    problem, address = WebPushProvider().hosts.check(endpoint, False)
    assert "non-public address (10.0.0.5)" in problem and address is None
