"""Bounces and complaints after the send: the generic signed webhook and Amazon SES via SNS."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from sqlalchemy import select

from app.db import db
from app.models.channels import MessageEvent
from app.models.message import Message
from tests.conftest import make_project, wait_for
from tests.support.smtp_sink import SmtpSink
from tests.support.sns_peer import SnsPeer

SECRET = "whsec-0123456789abcdef"


@pytest.fixture
def mail(app, request):
    """An SMTP server, SMTP_URL pointing at it, the webhook secret, then the workers."""
    sink = SmtpSink().start()
    request.addfinalizer(sink.stop)
    app.config.update(
        SMTP_URL=sink.url, SMTP_FROM="Acme <news@acme-mail.com>", EMAIL_WEBHOOK_SECRET=SECRET
    )
    request.getfixturevalue("workers")
    return sink


@pytest.fixture
def sns():
    peer = SnsPeer()
    yield peer
    peer.stop()


@pytest.fixture
def sent(app, api, mail):
    """An email sent to ann@example.com over SMTP: its message row."""
    api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    r = api.post(
        "/v1/notify", json={"userId": "ann", "title": "Hi", "body": "news", "channels": ["email"]}
    )
    assert r.status_code == 202, r.json
    wait_for(mail.received)
    return wait_for(lambda: [m for m in _messages(app) if m.status == "sent"])[0]


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def _events(app) -> list[tuple[int, str]]:
    with app.app_context():
        rows = db.session.execute(select(MessageEvent.message_id, MessageEvent.kind))
        return sorted(tuple(r) for r in rows)


def _suppressions(api) -> list[tuple[str, str, str]]:
    data = api.get("/v1/suppressions").json["data"]
    return [(s["channel"], s["address"], s["reason"]) for s in data]


def _signed(body: bytes, secret: str = SECRET, timestamp: str | None = None) -> dict[str, str]:
    text = body if timestamp is None else timestamp.encode() + b"." + body
    headers = {
        "X-Cairn-Signature": "sha256="
        + hmac.new(secret.encode(), text, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }
    if timestamp is not None:
        headers["X-Cairn-Timestamp"] = timestamp
    return headers


def _post_generic(client, report: dict, **signing) -> object:
    body = json.dumps(report).encode()
    return client.post("/webhooks/email/generic", data=body, headers=_signed(body, **signing))


# --- generic ---------------------------------------------------------------------------------


def test_a_signed_hard_bounce_suppresses_and_fails_the_message(app, api, client, sent):
    report = {"type": "bounce", "email": "Ann@Example.com", "messageId": f"<{sent.provider_id}>"}
    r = _post_generic(client, report, timestamp=str(int(time.time())))
    assert r.status_code == 200, r.json
    assert r.json == {"ok": True, "applied": 1}
    assert _suppressions(api) == [("email", "ann@example.com", "bounce")]
    assert _events(app) == [(sent.id, "bounce")]
    [message] = _messages(app)
    assert (message.status, message.reason) == ("failed", "bounced")
    # The same report again changes nothing.
    assert _post_generic(client, report).json == {"ok": True, "applied": 1}
    assert _suppressions(api) == [("email", "ann@example.com", "bounce")]


def test_a_complaint_opts_out_of_marketing_and_a_soft_bounce_is_only_recorded(
    app, api, client, sent
):
    soft = {"type": "bounce", "bounceType": "soft", "email": "ann@example.com"}
    assert _post_generic(client, soft).json == {"ok": True, "applied": 1}
    assert _suppressions(api) == []
    assert _messages(app)[0].status == "sent"
    # No messageId: the report goes to the latest email sent to the address.
    complaint = {"type": "complaint", "email": "ann@example.com"}
    assert _post_generic(client, complaint).json == {"ok": True, "applied": 1}
    assert _suppressions(api) == [("email", "ann@example.com", "complaint")]
    assert _events(app) == [(sent.id, "complaint"), (sent.id, "soft_bounce")]


def test_unsigned_or_badly_signed_reports_are_refused_and_never_applied(app, api, client, sent):
    report = {"type": "bounce", "email": "ann@example.com"}
    body = json.dumps(report).encode()
    r = client.post("/webhooks/email/generic", data=body, content_type="application/json")
    assert r.status_code == 401 and r.json["message"] == "X-Cairn-Signature is required"
    assert _post_generic(client, report, secret="not-the-secret").status_code == 403
    stale = str(int(time.time()) - 3600)
    assert _post_generic(client, report, timestamp=stale).status_code == 403
    tampered = _signed(body)
    r = client.post(
        "/webhooks/email/generic",
        data=json.dumps({**report, "email": "bob@example.com"}),
        headers=tampered,
    )
    assert r.status_code == 403
    assert _suppressions(api) == [] and _events(app) == []


def test_a_signed_but_malformed_report_names_its_field(client, mail):
    r = _post_generic(client, {"type": "bounce", "email": "not an address"})
    assert r.status_code == 422 and "email" in r.json["errors"]
    r = _post_generic(client, {"type": "unsubscribe", "email": "ann@example.com"})
    assert r.status_code == 422 and "type" in r.json["errors"]
    body = b"{not json"
    r = client.post("/webhooks/email/generic", data=body, headers=_signed(body))
    assert r.status_code == 400
    assert client.post("/webhooks/email/nope", data=b"{}").status_code == 404


def test_a_report_for_an_address_we_never_emailed_applies_nothing(api, client, mail):
    r = _post_generic(client, {"type": "bounce", "email": "stranger@example.com"})
    assert r.json == {"ok": True, "applied": 0}
    assert _suppressions(api) == []


def test_a_report_goes_to_the_project_that_sent_the_message(app, api, client, sent):
    other = make_project(app, name="Other")
    report = {"type": "bounce", "email": "ann@example.com", "messageId": sent.provider_id}
    assert _post_generic(client, report).json["applied"] == 1
    listed = client.get("/v1/suppressions", headers=other.auth()).json["data"]
    assert listed == []
    assert _suppressions(api) == [("email", "ann@example.com", "bounce")]


# --- Amazon SES through SNS ------------------------------------------------------------------


def _ses_bounce(message: Message, bounce_type: str = "Permanent") -> dict:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "ann@example.com", "status": "5.1.1"}],
            "timestamp": "2026-12-01T12:00:00.000Z",
        },
        "mail": {
            "messageId": "0100018c-ses-id",
            "source": "news@acme-mail.com",
            "destination": ["ann@example.com"],
            "commonHeaders": {"messageId": f"<{message.provider_id}>"},
        },
    }


def _ses_complaint() -> dict:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "ann@example.com"}],
            "complaintFeedbackType": "abuse",
        },
        "mail": {"messageId": "0100018c-ses-id", "destination": ["ann@example.com"]},
    }


def _post_sns(client, message: dict):
    # SNS posts JSON as text/plain.
    return client.post(
        "/webhooks/email/ses",
        data=json.dumps(message),
        headers={
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": message["Type"],
        },
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_ses_hard_bounce_and_complaint_through_sns(app, api, client, sent, sns, version):
    r = _post_sns(client, sns.notification(_ses_bounce(sent), version))
    assert r.status_code == 200, r.json
    assert r.json == {"ok": True, "applied": 1}
    assert _suppressions(api) == [("email", "ann@example.com", "bounce")]
    r = _post_sns(client, sns.notification(_ses_complaint(), version))
    assert r.json == {"ok": True, "applied": 1}
    assert _events(app) == [(sent.id, "bounce"), (sent.id, "complaint")]
    assert sns.cert_fetches == 1  # the certificate is cached


def test_an_ses_soft_bounce_is_only_recorded(app, api, client, sent, sns):
    r = _post_sns(client, sns.notification(_ses_bounce(sent, "Transient")))
    assert r.json == {"ok": True, "applied": 1}
    assert _suppressions(api) == []
    assert _events(app) == [(sent.id, "soft_bounce")]


def test_sns_messages_not_signed_by_the_certificate_are_refused(app, api, client, sent, sns):
    forged = sns.notification(_ses_bounce(sent))
    forged["Message"] = json.dumps(_ses_complaint())  # changed after signing
    assert _post_sns(client, forged).status_code == 403
    unsigned = {k: v for k, v in forged.items() if k != "Signature"}
    assert _post_sns(client, unsigned).status_code == 401
    other = SnsPeer()  # signed with another key, pointing at the real peer's certificate
    try:
        wrong_key = other.sign(
            {k: v for k, v in forged.items() if k not in ("Signature", "SigningCertURL")},
            cert_url=sns.url + sns.cert_path,
        )
    finally:
        other.stop()
    assert _post_sns(client, wrong_key).status_code == 403
    assert _suppressions(api) == [] and _events(app) == []


def test_a_certificate_outside_sns_is_refused_without_allow_private_endpoints(
    app, api, client, sent, sns
):
    app.config["ALLOW_PRIVATE_ENDPOINTS"] = False
    r = _post_sns(client, sns.notification(_ses_bounce(sent)))
    assert r.status_code == 403 and "SigningCertURL" in r.json["message"]
    assert sns.cert_fetches == 0
    assert _suppressions(api) == []


def test_a_subscription_confirmation_visits_its_subscribe_url(client, mail, sns):
    r = _post_sns(client, sns.subscription_confirmation())
    assert r.status_code == 200, r.json
    assert r.json == {"ok": True, "applied": 0}
    assert sns.confirmed == ["/confirm?Action=ConfirmSubscription&Token=2336"]


def test_an_ses_delivery_moves_the_message_to_delivered(app, api, client, sent, sns):
    delivery = {
        "notificationType": "Delivery",
        "delivery": {"recipients": ["ann@example.com"], "smtpResponse": "250 2.0.0 OK"},
        "mail": {"commonHeaders": {"messageId": f"<{sent.provider_id}>"}},
    }
    assert _post_sns(client, sns.notification(delivery, "2")).json == {"ok": True, "applied": 1}
    assert _messages(app)[0].status == "delivered"
    assert _events(app) == [(sent.id, "delivered")]
    assert _suppressions(api) == []
