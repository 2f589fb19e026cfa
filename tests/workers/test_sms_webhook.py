"""The generic `webhook` SMS provider against a local gateway: signed JSON, retries, failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from sqlalchemy import select

from app.db import db
from app.models.message import Message
from tests.conftest import wait_for
from tests.support.twilio_peer import Answer, GatewayPeer

PHONE = "+14155550123"
SECRET = "gateway-secret-0123"


@pytest.fixture
def gateway(app):
    """A gateway peer; SMS_WEBHOOK_URL selects the `webhook` provider (set before workers)."""
    peer = GatewayPeer().start()
    app.config.update(
        SMS_WEBHOOK_URL=peer.url + "/sms/send",
        SMS_WEBHOOK_SECRET=SECRET,
        PUBLIC_URL="https://cairn.example.com",
    )
    yield peer
    peer.stop()


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def _notify(api, body: str = "Your code is 123456"):
    api.post("/v1/users", json={"userId": "u", "phone": PHONE})
    r = api.post("/v1/notify", json={"userId": "u", "body": body, "channels": ["sms"]})
    assert r.status_code == 202, r.json


def _status_is(app, status: str, attempts: int | None = None):
    def check():
        rows = _messages(app)
        if rows and rows[0].status == status and attempts in (None, rows[0].attempts):
            return rows[0]
        return None

    return wait_for(check)


def test_the_gateway_gets_signed_json_and_its_id_is_kept(gateway, app, api, workers):
    before = int(time.time())
    _notify(api, "Привет, код 123456")
    message = _status_is(app, "sent")
    assert message.provider == "webhook"
    assert message.provider_id == "gw-1"
    assert message.segments == 1
    [got] = gateway.received
    assert got.path == "/sms/send"
    assert got.headers["Content-Type"] == "application/json"
    assert got.json == {
        "messageId": str(message.id),
        "to": PHONE,
        "body": "Привет, код 123456",
        "segments": 1,
        "statusCallback": "https://cairn.example.com/webhooks/sms/status",
    }
    timestamp = got.headers["X-Cairn-Timestamp"]
    assert before - 1 <= int(timestamp) <= time.time() + 1
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + got.body, hashlib.sha256)
    assert got.headers["X-Cairn-Signature"] == "sha256=" + expected.hexdigest()


def test_a_2xx_without_an_id_is_sent(gateway, app, api, workers):
    gateway.plan(Answer(202, None))
    _notify(api, "x" * 200)
    message = _status_is(app, "sent")
    assert message.provider_id is None
    assert message.segments == 2


def _resend_until(app, sweeper, status: str):
    def check():
        sweeper()
        rows = _messages(app)
        return rows[0] if rows and rows[0].status == status else None

    return wait_for(check)


@pytest.mark.parametrize(
    "answer",
    [Answer(429, {"error": "slow down"}, {"Retry-After": "1"}), Answer(503, {"error": "down"})],
)
def test_429_and_5xx_are_retried(answer, gateway, app, api, workers, sweeper):
    gateway.plan(answer)
    _notify(api)
    queued = _status_is(app, "queued", attempts=1)
    assert queued.reason.startswith(f"retrying: webhook HTTP {answer.status}")
    message = _resend_until(app, sweeper, "sent")
    assert message.attempts == 2
    assert len(gateway.received) == 2


@pytest.mark.parametrize(
    "answer", [Answer(400, {"error": "bad number"}), Answer(302, None, {"Location": "/elsewhere"})]
)
def test_other_answers_fail_without_retry(answer, gateway, app, api, workers):
    gateway.plan(answer)
    _notify(api)
    message = _status_is(app, "failed")
    assert message.reason.startswith(f"webhook HTTP {answer.status}")
    assert message.attempts == 1
    assert [r.path for r in gateway.received] == ["/sms/send"]  # the redirect not followed


@pytest.fixture
def unsigned(gateway, app):
    """The gateway configured without a secret."""
    app.config["SMS_WEBHOOK_SECRET"] = ""
    return gateway


def test_a_gateway_without_a_secret_is_never_called(unsigned, app, api, workers):
    _notify(api)
    message = _status_is(app, "failed")
    assert "SMS_WEBHOOK_SECRET" in message.reason
    assert unsigned.received == []


def test_the_body_is_the_exact_bytes_signed():
    from workers.channels.providers.sms_webhook import sign

    body = json.dumps({"a": 1}).encode()
    mac = hmac.new(b"s", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s", "1700000000", body) == "sha256=" + mac


# --- the gateway's callbacks ------------------------------------------------------------


def _signed(
    client,
    path: str,
    payload: object,
    *,
    secret: str = SECRET,
    at: float | None = None,
    raw: bytes | None = None,
    signature: str | None = None,
):
    body = raw if raw is not None else json.dumps(payload).encode()
    timestamp = str(int(time.time() if at is None else at))
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-Cairn-Timestamp": timestamp,
        "X-Cairn-Signature": signature or "sha256=" + mac.hexdigest(),
    }
    return client.post(path, data=body, headers=headers)


def _events(app) -> list[str]:
    from app.models import MessageEvent

    with app.app_context():
        return list(db.session.scalars(select(MessageEvent.kind).order_by(MessageEvent.id)))


def _suppressions(app) -> list[tuple[str, str]]:
    from app.models.message import Suppression

    with app.app_context():
        return list(db.session.execute(select(Suppression.address, Suppression.reason)).tuples())


STATUS = "/webhooks/sms/status"


def test_a_signed_delivery_report_moves_the_message_once(gateway, app, api, client, workers):
    _notify(api)
    message = _status_is(app, "sent")
    report = {"messageId": str(message.id), "status": "delivered"}
    assert _signed(client, STATUS, report).status_code == 204
    assert _signed(client, STATUS, report).status_code == 204
    late = {"messageId": message.id, "status": "failed", "reason": "late", "suppress": "invalid"}
    assert _signed(client, STATUS, late).status_code == 204
    assert _messages(app)[0].status == "delivered"
    assert _events(app) == ["delivered"]
    assert _suppressions(app) == []


def test_a_failure_report_can_suppress_the_number(gateway, app, api, client, workers):
    _notify(api)
    message = _status_is(app, "sent")
    report = {
        "messageId": message.id,
        "status": "failed",
        "reason": "number gone",
        "suppress": "invalid",
    }
    assert _signed(client, STATUS, report).status_code == 204
    row = _messages(app)[0]
    assert (row.status, row.reason) == ("failed", "gateway: number gone")
    assert _suppressions(app) == [(PHONE, "invalid")]


@pytest.mark.parametrize("forgery", ["secret", "old", "future", "tampered", "missing"])
def test_unsigned_stale_or_tampered_reports_are_403(forgery, gateway, app, api, client, workers):
    _notify(api)
    message = _status_is(app, "sent")
    report = {"messageId": message.id, "status": "failed", "suppress": "stop"}
    if forgery == "secret":
        r = _signed(client, STATUS, report, secret="not-it")
    elif forgery == "old":
        r = _signed(client, STATUS, report, at=time.time() - 600)
    elif forgery == "future":
        r = _signed(client, STATUS, report, at=time.time() + 600)
    elif forgery == "tampered":
        r = _signed(client, STATUS, report, signature="sha256=" + "0" * 64)
    else:
        r = client.post(STATUS, json=report)
    assert r.status_code == 403, r.json
    assert _messages(app)[0].status == "sent"
    assert _suppressions(app) == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"messageId": "abc", "status": "delivered"}, "messageId"),
        ({"messageId": True, "status": "delivered"}, "messageId"),
        ({"messageId": "1", "status": "opened"}, "status"),
        ({"messageId": "1", "status": "failed", "suppress": "bounce"}, "suppress"),
        ({"messageId": "1", "status": "failed", "reason": 7}, "reason"),
        ([1, 2], "body"),
    ],
)
def test_bad_reports_are_4xx_naming_the_field(payload, field, gateway, app, client):
    r = _signed(client, STATUS, payload)
    assert r.status_code == 422, r.json
    assert field in r.json["errors"]


def test_a_report_that_is_not_json_is_400(gateway, app, client):
    r = _signed(client, STATUS, None, raw=b"{not json")
    assert r.status_code == 400, r.json


def test_a_report_for_another_providers_message_changes_nothing(app, api, client, workers):
    app.config["SMS_WEBHOOK_SECRET"] = SECRET
    _notify(api)  # the sandbox sends it
    message = _status_is(app, "sent")
    r = _signed(client, STATUS, {"messageId": message.id, "status": "failed"})
    assert r.status_code == 204
    assert _messages(app)[0].status == "sent"


def test_inbound_keywords_through_the_gateway(gateway, app, project, client):
    inbound = "/webhooks/sms/inbound"
    r = _signed(client, inbound, {"from": PHONE, "to": "+14155550100", "body": " stop "})
    assert r.status_code == 200 and r.json == {"reply": None}
    assert _suppressions(app) == [(PHONE, "stop")]
    r = _signed(client, inbound, {"from": PHONE, "to": "+14155550100", "body": "HELP"})
    assert r.json == {"reply": "Acme: Reply STOP to unsubscribe, START to resubscribe."}
    r = _signed(client, inbound, {"from": PHONE, "to": "+14155550100", "body": "START"})
    assert r.json == {"reply": None}
    assert _suppressions(app) == []
    r = _signed(client, inbound, {"from": PHONE, "body": "STOP"})
    assert r.status_code == 422 and "to" in r.json["errors"]


@pytest.fixture
def reporting_gateway(gateway, app, live_server):
    """The gateway reports delivery before it answers the send (so before the worker records
    it), through the statusCallback on a real socket (set before the workers start)."""
    app.config["PUBLIC_URL"] = live_server
    gateway.secret = SECRET
    gateway.report_first = "delivered"
    return gateway


def test_a_report_before_the_send_is_recorded_is_kept(reporting_gateway, app, api, workers):
    _notify(api)
    message = wait_for(lambda: next((m for m in _messages(app) if m.provider_id), None))
    assert [answer for _, answer in reporting_gateway.callbacks] == [204]
    assert message.status == "delivered"
    assert message.provider == "webhook" and message.provider_id == "gw-1"
    assert message.sent_at is not None
    assert _events(app) == ["delivered"]
