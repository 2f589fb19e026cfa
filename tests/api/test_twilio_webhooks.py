"""Twilio's callbacks: signed delivery reports and inbound STOP / START / HELP."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import db
from app.models import MessageEvent
from app.models.message import Message, MessageStatusChange, Suppression
from app.services.sms import twilio_signature, twilio_signature_valid
from tests.conftest import make_project, wait_for
from tests.support.twilio_peer import TwilioPeer, twilio_sign

PUBLIC = "https://cairn.example.com"
STATUS = "/webhooks/twilio/status"
INBOUND = "/webhooks/twilio/inbound"
PHONE = "+14155550123"
SENDER = "+14155550100"
EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


@pytest.fixture
def twilio(app):
    """A Twilio peer, with the app's settings pointing at it (before the workers start)."""
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


def _callback(client, token: str, path: str, params: dict[str, str], **kwargs):
    """POST a form as Twilio does, signed over PUBLIC_URL + path (+ query)."""
    query = kwargs.pop("query", "")
    url = PUBLIC + path + (f"?{query}" if query else "")
    signature = kwargs.pop("signature", None) or twilio_sign(token, url, params)
    target = path + (f"?{query}" if query else "")
    return client.post(target, data=params, headers={"X-Twilio-Signature": signature})


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def _sent_sms(app, api, body: str = "hello") -> Message:
    api.post("/v1/users", json={"userId": "u", "phone": PHONE})
    r = api.post("/v1/notify", json={"userId": "u", "body": body, "channels": ["sms"]})
    assert r.status_code == 202, r.json
    [message] = wait_for(
        lambda: [m for m in _messages(app) if m.status == "sent" and m.provider_id] or None
    )
    return message


def _history(app, message_id: int) -> list[tuple[str, str | None]]:
    with app.app_context():
        return list(
            db.session.execute(
                select(MessageStatusChange.status, MessageStatusChange.reason)
                .where(MessageStatusChange.message_id == message_id)
                .order_by(MessageStatusChange.id)
            ).tuples()
        )


def _events(app, message_id: int) -> list[tuple[str, dict]]:
    with app.app_context():
        return list(
            db.session.execute(
                select(MessageEvent.kind, MessageEvent.detail).where(
                    MessageEvent.message_id == message_id
                )
            ).tuples()
        )


def _suppressions(app) -> list[tuple[int, str, str, str]]:
    with app.app_context():
        return list(
            db.session.execute(
                select(
                    Suppression.project_id,
                    Suppression.channel,
                    Suppression.address,
                    Suppression.reason,
                ).order_by(Suppression.project_id, Suppression.id)
            ).tuples()
        )


def _status(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": PHONE,
        "From": SENDER,
        "ApiVersion": "2010-04-01",
        **extra,
    }


# --- the signature ----------------------------------------------------------------------


def test_the_signature_matches_twilios_documented_example():
    # Twilio's "Webhooks security" page: this token, URL and parameters sign to this value.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert twilio_sign("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio_signature("12345", url, list(params.items())) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    pairs = list(params.items())
    assert twilio_signature_valid("12345", url, pairs, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    # Twilio sometimes signs with the default port written out.
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert twilio_signature_valid("12345", url, pairs, twilio_sign("12345", with_port, params))
    assert not twilio_signature_valid("12345", url, pairs, twilio_sign("1234", url, params))
    assert not twilio_signature_valid("12345", url, pairs, None)
    assert not twilio_signature_valid("", url, pairs, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


# --- delivery reports -------------------------------------------------------------------


def test_a_delivered_report_moves_the_message_and_records_the_event(
    twilio, app, api, client, workers
):
    message = _sent_sms(app, api)
    r = _callback(client, twilio.auth_token, STATUS, _status(message.provider_id, "delivered"))
    assert r.status_code == 204, r.data
    [row] = _messages(app)
    assert row.status == "delivered"
    assert _history(app, row.id)[-1] == ("delivered", None)
    assert _events(app, row.id) == [("delivered", {"status": "delivered"})]


def test_an_undelivered_report_fails_the_message_with_its_error_code(
    twilio, app, api, client, workers
):
    message = _sent_sms(app, api)
    params = _status(message.provider_id, "undelivered", ErrorCode="30003")
    assert _callback(client, twilio.auth_token, STATUS, params).status_code == 204
    [row] = _messages(app)
    assert row.status == "failed"
    assert row.reason == "twilio 30003: unreachable destination handset"
    assert _history(app, row.id)[-1] == ("failed", row.reason)
    assert _events(app, row.id) == [("failed", {"status": "undelivered", "errorCode": "30003"})]
    # A handset switched off is not a dead number: nothing is suppressed.
    assert _suppressions(app) == []


def test_a_failed_report_for_an_unknown_handset_suppresses_the_number(
    twilio, app, api, client, workers
):
    message = _sent_sms(app, api)
    params = _status(message.provider_id, "failed", ErrorCode="30005")
    assert _callback(client, twilio.auth_token, STATUS, params).status_code == 204
    assert _messages(app)[0].status == "failed"
    assert [s[1:] for s in _suppressions(app)] == [("sms", PHONE, "invalid")]


def test_reports_never_move_a_message_backwards(twilio, app, api, client, workers):
    message = _sent_sms(app, api)
    token, sid = twilio.auth_token, message.provider_id
    for status in ("queued", "sent", "delivered", "sent", "delivered", "undelivered"):
        r = _callback(client, token, STATUS, _status(sid, status, ErrorCode="30003"))
        assert r.status_code == 204
    [row] = _messages(app)
    assert row.status == "delivered" and row.reason is None
    assert [h[0] for h in _history(app, row.id)].count("delivered") == 1
    assert [e[0] for e in _events(app, row.id)] == ["delivered"]


def test_a_report_for_an_unknown_message_is_answered_and_changes_nothing(twilio, app, client):
    r = _callback(client, twilio.auth_token, STATUS, _status("SM" + "f" * 32, "delivered"))
    assert r.status_code == 204


def test_a_query_string_is_part_of_the_signed_url(twilio, app, api, client, workers):
    message = _sent_sms(app, api)
    params = _status(message.provider_id, "delivered")
    r = _callback(client, twilio.auth_token, STATUS, params, query="tag=a%20b")
    assert r.status_code == 204
    assert _messages(app)[0].status == "delivered"


@pytest.mark.parametrize("forgery", ["wrong-token", "wrong-url", "tampered", "missing"])
def test_a_forged_or_missing_signature_is_403_and_nothing_is_applied(
    forgery, twilio, app, api, client, workers
):
    message = _sent_sms(app, api)
    params = _status(message.provider_id, "failed", ErrorCode="30005")
    url = PUBLIC + STATUS
    signature = {
        "wrong-token": twilio_sign("not-the-token", url, params),
        "wrong-url": twilio_sign(twilio.auth_token, "https://evil.example.com" + STATUS, params),
        "tampered": twilio_sign(twilio.auth_token, url, {**params, "ErrorCode": "30003"}),
        "missing": None,
    }[forgery]
    headers = {"X-Twilio-Signature": signature} if signature else {}
    r = client.post(STATUS, data=params, headers=headers)
    assert r.status_code == 403, r.data
    assert r.json["code"] == 403 and "X-Twilio-Signature" in r.json["errors"]
    [row] = _messages(app)
    assert row.status == "sent"
    assert _events(app, row.id) == []
    assert _suppressions(app) == []


def test_without_an_auth_token_every_callback_is_refused(app, client):
    params = {"From": PHONE, "To": SENDER, "Body": "STOP"}
    r = client.post(INBOUND, data=params, headers={"X-Twilio-Signature": twilio_sign("", "", {})})
    assert r.status_code == 403
    assert _suppressions(app) == []


# --- inbound keywords -------------------------------------------------------------------


def _inbound(client, token: str, body: str, sender: str = PHONE, to: str = SENDER):
    params = {
        "AccountSid": "AC" + "0" * 32,
        "MessageSid": "SM" + "a" * 32,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": "0",
    }
    return _callback(client, token, INBOUND, params)


@pytest.fixture
def token(app) -> str:
    """The auth token the app checks signatures with (no workers: inbound needs none)."""
    app.config.update(TWILIO_AUTH_TOKEN="tok-inbound", PUBLIC_URL=PUBLIC, TWILIO_FROM=SENDER)
    return "tok-inbound"


@pytest.mark.parametrize(
    "body",
    [
        *("STOP", "stop", "  Stop \n", "STOPALL", "unsubscribe", "Cancel", "END", "quit"),
        *("Stop.", "STOP!!", "stop all", "Opt out", "revoke"),
    ],
)
def test_stop_and_its_synonyms_opt_the_number_out(body, token, app, project, client):
    r = _inbound(client, token, body)
    assert r.status_code == 200
    assert r.mimetype == "text/xml"
    assert r.get_data(as_text=True) == EMPTY
    assert _suppressions(app) == [(project.id, "sms", PHONE, "stop")]


def test_after_stop_marketing_and_transactional_sms_are_suppressed(
    token, app, api, client, workers
):
    assert _inbound(client, token, "STOP").status_code == 200
    api.post("/v1/users", json={"userId": "u", "phone": PHONE})
    for transactional in (False, True):
        r = api.post(
            "/v1/notify",
            json={
                "userId": "u",
                "body": "hi",
                "channels": ["sms"],
                "transactional": transactional,
            },
        )
        assert r.status_code == 202, r.json
    rows = wait_for(
        lambda: (
            (rows := _messages(app))
            and len(rows) == 2
            and all(m.status not in ("queued", "sending") for m in rows)
            and rows
        )
    )
    assert [(m.transactional, m.status) for m in rows] == [
        (False, "suppressed"),
        (True, "suppressed"),
    ]
    assert all("stop" in (m.reason or "") for m in rows)


def test_start_opts_back_in_but_never_lifts_another_suppression(token, app, api, project, client):
    _inbound(client, token, "STOP")
    r = _inbound(client, token, " start ")
    assert r.status_code == 200 and r.get_data(as_text=True) == EMPTY
    assert _suppressions(app) == []
    # A bounced or dead number stays suppressed whatever its owner texts.
    r = api.post("/v1/suppressions", json={"channel": "sms", "address": PHONE, "reason": "bounce"})
    assert r.status_code == 200, r.json
    with app.app_context():
        db.session.add(
            Suppression(
                project_id=project.id, channel="sms", address="+14155550124", reason="invalid"
            )
        )
        db.session.commit()
    _inbound(client, token, "START")
    for word in ("UNSTOP", "yes"):
        _inbound(client, token, word, sender="+14155550124")
    assert _suppressions(app) == [
        (project.id, "sms", PHONE, "bounce"),
        (project.id, "sms", "+14155550124", "invalid"),
    ]


def test_stop_replaces_a_marketing_only_unsubscribe(token, app, project, client):
    with app.app_context():
        db.session.add(
            Suppression(project_id=project.id, channel="sms", address=PHONE, reason="unsubscribed")
        )
        db.session.commit()
    _inbound(client, token, "STOP")
    assert _suppressions(app) == [(project.id, "sms", PHONE, "stop")]


def test_help_answers_the_default_text_naming_the_project(token, app, project, client):
    r = _inbound(client, token, "help")
    assert r.status_code == 200 and r.mimetype == "text/xml"
    assert r.get_data(as_text=True) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
        "Acme: Reply STOP to unsubscribe, START to resubscribe.</Message></Response>"
    )
    assert _suppressions(app) == []


def test_help_answers_the_projects_help_text_escaped(token, app, api, client):
    text = "Acme & Co <alerts>: call 555-0100. Reply STOP to unsubscribe."
    r = api.patch("/v1/project", json={"settings": {"sms": {"helpText": text}}})
    assert r.status_code == 200, r.json
    r = _inbound(client, token, "INFO")
    assert r.get_data(as_text=True) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
        "Acme &amp; Co &lt;alerts&gt;: call 555-0100. Reply STOP to unsubscribe."
        "</Message></Response>"
    )


@pytest.mark.parametrize(
    "body", ["hello", "please stop", "STOPP", "", "Stop sending me these", "start now", "help me"]
)
def test_other_bodies_change_nothing(body, token, app, client):
    r = _inbound(client, token, body)
    assert r.status_code == 200 and r.get_data(as_text=True) == EMPTY
    assert _suppressions(app) == []


def test_stop_applies_to_the_projects_sending_from_the_number_texted(
    token, app, api, project, client
):
    own = make_project(app, name="Owns a number")
    with app.app_context():
        from app.models import Project

        row = db.session.get(Project, own.id)
        row.settings = {"sms": {"fromNumber": "+14155550111"}}
        db.session.commit()
    shared = make_project(app, name="Shares the default")
    _inbound(client, token, "STOP", to="+14155550111")
    assert _suppressions(app) == [(own.id, "sms", PHONE, "stop")]
    _inbound(client, token, "STOP", sender="+14155550124", to=SENDER)
    assert [(s[0], s[2]) for s in _suppressions(app) if s[2] == "+14155550124"] == [
        (project.id, "+14155550124"),
        (shared.id, "+14155550124"),
    ]
    r = _inbound(client, token, "HELP", to="+14155550111")
    assert "Owns a number: Reply STOP" in r.get_data(as_text=True)


def test_inbound_with_a_bad_signature_is_403(token, app, client):
    params = {"From": PHONE, "To": SENDER, "Body": "STOP"}
    r = client.post(INBOUND, data=params, headers={"X-Twilio-Signature": "AAAA"})
    assert r.status_code == 403
    assert _suppressions(app) == []
