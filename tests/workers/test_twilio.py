"""SMS through Twilio against a local peer speaking its Messages API, and segment counting."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import db
from app.models.message import Message, MessageStatusChange, Suppression
from tests.conftest import wait_for
from tests.support.twilio_peer import Answer, TwilioPeer, twilio_error
from workers.channels.providers import provider_for
from workers.channels.sms import encoding, segments

PHONE = "+14155550123"
SENDER = "+14155550100"


# --- segments: a pure function --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected_encoding", "expected"),
    [
        ("", "GSM-7", 1),
        ("hi", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà", "GSM-7", 1),
        # Extension characters take two septets: 80 euros fill one message, 81 do not.
        ("€" * 80, "GSM-7", 1),
        ("€" * 81, "GSM-7", 2),
        ("{}[]~|^\\" * 10, "GSM-7", 1),
        # 152 septets + an escape pair: the pair never straddles two parts.
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 2),
        ("a" * 152 + "€" + "a" * 153, "GSM-7", 3),
        ("ç" * 70, "UCS-2", 1),  # lower-case ç is not in GSM-7 (only Ç is)
        ("Привет" * 11 + "Прив", "UCS-2", 1),
        ("я" * 71, "UCS-2", 2),
        ("я" * 134, "UCS-2", 2),
        ("я" * 135, "UCS-2", 3),
        ("a" * 159 + "’", "UCS-2", 3),  # one curly apostrophe makes it all UCS-2
        # An emoji is two UTF-16 code units: 35 fill one message.
        ("😀" * 35, "UCS-2", 1),
        ("😀" * 36, "UCS-2", 2),
        ("a" + "😀" * 33, "UCS-2", 1),
        ("a" * 66 + "😀" + "a" * 3, "UCS-2", 2),
    ],
)
def test_segments_follow_gsm7_and_ucs2_limits(body, expected_encoding, expected):
    assert encoding(body) == expected_encoding
    assert segments(body) == expected


def test_segments_never_split_a_surrogate_pair_or_an_escape():
    # 66 units then an emoji (2 units): part one is 66, the emoji starts part two.
    assert segments("a" * 66 + "😀" + "я" * 66) == 3
    assert segments("a" * 66 + "я" + "😀" + "я" * 65) == 2


def test_twilio_credentials_select_the_provider_unless_sms_provider_names_another():
    assert provider_for("sms", {}) == "sandbox"
    assert provider_for("sms", {"TWILIO_ACCOUNT_SID": "AC1"}) == "twilio"
    assert provider_for("sms", {"SMS_WEBHOOK_URL": "https://gw.example.com"}) == "webhook"
    both = {"TWILIO_ACCOUNT_SID": "AC1", "SMS_WEBHOOK_URL": "https://gw.example.com"}
    assert provider_for("sms", both) == "twilio"
    assert provider_for("sms", {**both, "SMS_PROVIDER": "webhook"}) == "webhook"
    assert provider_for("sms", both, {"providers": {"sms": "sandbox"}}) == "sandbox"


# --- against the peer -----------------------------------------------------------------


@pytest.fixture
def twilio(app):
    """A Twilio peer, with the app's settings pointing at it (before the workers start)."""
    peer = TwilioPeer().start()
    app.config.update(
        TWILIO_ACCOUNT_SID=peer.account_sid,
        TWILIO_AUTH_TOKEN=peer.auth_token,
        TWILIO_FROM=SENDER,
        TWILIO_BASE_URL=peer.url,
        PUBLIC_URL="https://cairn.example.com",
    )
    yield peer
    peer.stop()


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def _final(app, count: int = 1) -> list[Message]:
    """Wait until `count` messages left queued/sending; return them."""

    def done():
        rows = _messages(app)
        finished = [m for m in rows if m.status not in ("queued", "sending")]
        return rows if len(finished) >= count else None

    return wait_for(done)


def _notify(api, body: str, user: str = "u", phone: str = PHONE, **extra):
    api.post("/v1/users", json={"userId": user, "phone": phone})
    r = api.post("/v1/notify", json={"userId": user, "body": body, "channels": ["sms"], **extra})
    assert r.status_code == 202, r.json
    return r


def _suppressions(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        return list(
            db.session.execute(
                select(Suppression.channel, Suppression.address, Suppression.reason)
            ).tuples()
        )


def test_notify_sms_reaches_twilio_with_the_form_and_records_segments(twilio, app, api, workers):
    _notify(api, "Your code is 123456")
    [message] = _final(app)
    assert message.status == "sent", message.reason
    assert message.provider == "twilio"
    [got] = twilio.messages
    assert got.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    assert got.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert got.value("To") == PHONE
    assert got.value("From") == SENDER
    assert got.value("Body") == "Your code is 123456"
    # Our id rides in the (signed) callback URL: a report that outruns the sid finds it.
    expected = f"https://cairn.example.com/webhooks/twilio/status?m={message.id}"
    assert got.value("StatusCallback") == expected
    assert got.value("MessagingServiceSid") is None
    assert message.provider_id is not None and message.provider_id.startswith("SM")
    assert message.segments == 1
    assert message.rendered == {"body": "Your code is 123456"}


def test_gsm7_and_ucs2_bodies_record_their_segments(twilio, app, api, workers):
    _notify(api, "a" * 200, user="gsm", phone="+14155550124")
    _notify(api, "Привет! " * 10, user="ucs", phone="+14155550125")
    rows = _final(app, 2)
    by_phone = {m.address: m for m in rows}
    assert by_phone["+14155550124"].segments == 2
    assert by_phone["+14155550125"].segments == 2  # 80 UCS-2 units: 67 + 13
    assert {m.status for m in rows} == {"sent"}
    assert sorted(r.value("Body") for r in twilio.messages) == sorted(["a" * 200, "Привет! " * 10])


@pytest.fixture
def messaging_service(twilio, app):
    """A messaging service next to the sender (set before the workers read the settings)."""
    app.config["TWILIO_MESSAGING_SERVICE_SID"] = "MG" + "1" * 32
    return app.config["TWILIO_MESSAGING_SERVICE_SID"]


def test_a_template_sms_uses_the_project_sender_and_a_messaging_service(
    messaging_service, twilio, app, api, workers
):
    r = api.patch("/v1/project", json={"settings": {"sms": {"from": "+14155550199"}}})
    assert r.status_code == 200, r.json
    template = {
        "name": "code",
        "defaultLanguage": "en",
        "channels": {"sms": {"en": {"body": "Code {{ params.code }}"}}},
    }
    assert api.post("/v1/templates", json=template).status_code == 201
    api.post("/v1/users", json={"userId": "t", "phone": PHONE})
    r = api.post("/v1/messages", json={"template": "code", "userId": "t", "data": {"code": 42}})
    assert r.status_code == 200, r.json
    [message] = _final(app)
    assert message.status == "sent", message.reason
    [got] = twilio.messages
    assert got.value("Body") == "Code 42"
    assert got.value("From") == "+14155550199"
    assert got.value("MessagingServiceSid") == messaging_service


def test_twilio_21610_fails_and_suppresses_the_number_as_stopped(twilio, app, api, workers):
    twilio.plan(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))
    _notify(api, "hello")
    [message] = _final(app)
    assert message.status == "failed"
    assert message.reason == "twilio 21610: Attempt to send to unsubscribed recipient"
    assert _suppressions(app) == [("sms", PHONE, "stop")]
    # The next send to the number is suppressed before it reaches Twilio.
    r = api.post("/v1/notify", json={"userId": "u", "body": "again", "channels": ["sms"]})
    assert r.status_code == 202, r.json
    rows = _final(app, 2)
    assert rows[1].status == "suppressed"
    assert len(twilio.messages) == 1


@pytest.mark.parametrize("code", [21211, 21614])
def test_an_invalid_or_non_mobile_number_fails_and_is_suppressed(code, twilio, app, api, workers):
    twilio.plan(twilio_error(400, code, "'To' number is not a valid mobile number"))
    _notify(api, "hello")
    [message] = _final(app)
    assert message.status == "failed"
    assert message.reason.startswith(f"twilio {code}:")
    assert _suppressions(app) == [("sms", PHONE, "invalid")]


def test_another_4xx_fails_without_retry_or_suppression(twilio, app, api, workers):
    twilio.plan(twilio_error(400, 21408, "Permission to send an SMS has not been enabled"))
    _notify(api, "hello")
    [message] = _final(app)
    assert message.status == "failed"
    assert message.attempts == 1
    assert message.reason == "twilio 21408: Permission to send an SMS has not been enabled"
    assert _suppressions(app) == []
    assert len(twilio.messages) == 1


def test_bad_credentials_fail_as_auth(twilio, app, api, workers):
    twilio.auth_token = "another-token"  # the peer now refuses ours
    _notify(api, "hello")
    [message] = _final(app)
    assert message.status == "failed"
    assert message.reason.startswith("auth")
    assert message.attempts == 1
    assert _suppressions(app) == []


def _resend_when_due(app, sweeper, status: str):
    def check():
        sweeper()
        rows = _messages(app)
        return rows if rows and rows[0].status == status else None

    return wait_for(check)


def test_429_is_retried_after_retry_after(twilio, app, api, workers, sweeper):
    twilio.plan(twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "2"}))
    _notify(api, "hello")

    def retrying():
        rows = _messages(app)
        return rows if rows and rows[0].status == "queued" and rows[0].attempts == 1 else None

    [queued] = wait_for(retrying)
    assert queued.reason == "retrying: twilio 20429: Too Many Requests"
    # Retry-After, not our 2 s backoff of a first attempt: at least 2 s after the claim.
    assert (queued.not_before - queued.claimed_at).total_seconds() >= 1.9
    [message] = _resend_when_due(app, sweeper, "sent")
    assert message.attempts == 2
    assert len(twilio.messages) == 2
    with app.app_context():
        history = list(
            db.session.scalars(
                select(MessageStatusChange.status)
                .where(MessageStatusChange.message_id == message.id)
                .order_by(MessageStatusChange.id)
            )
        )
    assert history[-2:] == ["queued", "sent"]


def test_a_5xx_and_a_dropped_connection_are_retried(twilio, app, api, workers, sweeper):
    twilio.plan(Answer(500, {"code": 20500, "message": "Internal Server Error"}))
    _notify(api, "hello")
    wait_for(
        lambda: (
            _messages(app)
            and _messages(app)[0].reason == "retrying: twilio 20500: Internal Server Error"
        )
    )
    [message] = _resend_when_due(app, sweeper, "sent")
    assert message.attempts == 2


def test_an_unreachable_twilio_is_retried(twilio, app, api, workers):
    twilio.stop()
    _notify(api, "hello")

    def retrying():
        rows = _messages(app)
        return rows if rows and rows[0].status == "queued" and rows[0].attempts == 1 else None

    [message] = wait_for(retrying)
    assert message.reason.startswith("retrying: twilio: ConnectionError")


# --- a status callback that outruns the record step ------------------------------------


@pytest.fixture
def twilio_calls_back(twilio, app, live_server):
    """The peer reports through the callback before it answers the create request; the
    callback URL reaches the app on a real socket (set before the workers start)."""
    app.config["PUBLIC_URL"] = live_server
    return twilio


def _history(app, message_id: int) -> list[str]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(MessageStatusChange.status)
                .where(MessageStatusChange.message_id == message_id)
                .order_by(MessageStatusChange.id)
            )
        )


@pytest.mark.parametrize(
    ("reported", "final", "reason"),
    [
        ("delivered", "delivered", None),
        ("undelivered", "failed", "twilio 30003: unreachable destination handset"),
    ],
)
def test_a_report_before_the_send_is_recorded_is_kept(
    reported, final, reason, twilio_calls_back, app, api, workers
):
    twilio = twilio_calls_back
    twilio.report_first = reported
    _notify(api, "hello")
    [message] = wait_for(lambda: [m for m in _messages(app) if m.provider_id] or None)
    # The callback was answered (not lost) while the worker still waited for Twilio's answer.
    [(url, answer)] = twilio.callbacks
    assert url.endswith(f"/webhooks/twilio/status?m={message.id}")
    assert answer == 204
    # The record step stored the sid and the send time, but kept the reported status.
    assert message.status == final
    assert message.reason == reason
    assert message.provider == "twilio" and message.provider_id.startswith("SM")
    assert message.sent_at is not None and message.segments == 1
    assert _history(app, message.id).count(final) == 1
    assert "sent" not in _history(app, message.id)
