"""Email over SMTP through the real pipeline, against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import dataclasses
import re
import socket

import pytest
from sqlalchemy import select

from app.db import db
from app.models.message import Message, MessageStatusChange
from tests.conftest import wait_for
from tests.support.smtp_sink import SmtpSink, TlsRefusingServer, free_port, tls_server_context
from workers.channels.base import Delivery, ProviderContext, Retry
from workers.channels.providers import provider_for
from workers.channels.providers.smtp import (
    SmtpConfigError,
    SmtpProvider,
    close_connections,
    parse_smtp_url,
)

SENDER = "Acme News <news@acme-mail.com>"


@pytest.fixture
def sink():
    """An SMTP server on 127.0.0.1 keeping every message."""
    server = SmtpSink().start()
    yield server
    server.stop()


@pytest.fixture
def mail(app, sink, request):
    """SMTP_URL pointing at the sink, then the worker threads (they read the settings)."""
    app.config.update(
        SMTP_URL=sink.url, SMTP_FROM=SENDER, UNSUBSCRIBE_MAILTO="unsubscribe@acme-mail.com"
    )
    request.getfixturevalue("workers")
    return sink


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def _suppressions(api) -> list[tuple[str, str, str]]:
    return [
        (s["channel"], s["address"], s["reason"]) for s in api.get("/v1/suppressions").json["data"]
    ]


def _notify(api, user: str = "ann", **extra):
    r = api.post(
        "/v1/notify",
        json={
            "userId": user,
            "title": "Spring sale",
            "body": "Everything is 20% off.",
            "url": "https://shop.acme-mail.com/sale?from=email&x=1",
            "channels": ["email"],
            **extra,
        },
    )
    assert r.status_code == 202, r.json
    return r


def test_smtp_url_selects_the_smtp_provider_unless_email_provider_names_another():
    assert provider_for("email", {"SMTP_URL": "smtp://h:25"}) == "smtp"
    assert provider_for("email", {"SMTP_URL": "smtp://h:25", "EMAIL_PROVIDER": "sandbox"}) == (
        "sandbox"
    )
    assert provider_for("email", {}) == "sandbox"


def test_smtp_url_forms():
    plain = parse_smtp_url("smtp://mail.acme-mail.com")
    assert (plain.port, plain.implicit_tls, plain.starttls, plain.username) == (
        25,
        False,
        False,
        None,
    )
    tls = parse_smtp_url("smtp://user%40x:p%3Ass@mail.acme-mail.com:2525?starttls=1")
    assert (tls.port, tls.starttls, tls.username, tls.password) == (2525, True, "user@x", "p:ss")
    implicit = parse_smtp_url("smtps://u:p@mail.acme-mail.com")
    assert (implicit.port, implicit.implicit_tls) == (465, True)
    for bad in ("http://x", "smtp://", "smtps://h?starttls=1", "smtp://h:99999"):
        with pytest.raises(SmtpConfigError):
            parse_smtp_url(bad)


def test_a_notify_email_arrives_as_multipart_text_and_html_with_its_headers(app, api, mail):
    api.post("/v1/users", json={"userId": "ann", "email": "Ann@Example.com"})
    _notify(api)
    wait_for(lambda: [m.status for m in _messages(app)] == ["sent"])
    [received] = wait_for(mail.received)
    msg = received.message
    assert received.rcpt_tos == ["ann@example.com"]
    assert received.mail_from == "news@acme-mail.com"
    assert msg["From"] == SENDER
    assert msg["To"] == "ann@example.com"
    assert msg["Subject"] == "Spring sale"
    assert msg["Date"]
    [message] = _messages(app)
    assert msg["Message-ID"] == f"<{message.provider_id}>"
    assert message.provider == "smtp" and message.provider_id.endswith("@acme-mail.com")
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()
    assert "Everything is 20% off." in text
    assert "https://shop.acme-mail.com/sale?from=email&x=1" in text  # the text part untracked
    html = msg.get_body(("html",)).get_content()
    # The link goes through the click redirect; the open pixel ends the body.
    assert 'href="https://shop.acme-mail.com' not in html
    assert re.search(r'<a href="http://localhost:8000/t/c/[^"]+"', html)
    assert re.search(r'<img src="http://localhost:8000/t/o/[^"]+\.gif" width="1" height="1"', html)
    unsubscribe = msg["List-Unsubscribe"]
    mailto = "<mailto:unsubscribe@acme-mail.com?subject=unsubscribe>"
    assert re.fullmatch(r"<http://localhost:8000/u/[^>]+>, " + re.escape(mailto), unsubscribe)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # As it was sent: one plain line, never RFC 2047 encoded words (clients would not see URLs).
    assert f"\r\nList-Unsubscribe: {unsubscribe}\r\n".encode() in received.raw
    # What is stored is what was sent.
    assert message.rendered["html"] == html.replace("\r\n", "\n").rstrip("\n")
    assert message.rendered["listUnsubscribe"] == unsubscribe
    assert message.rendered["from"] == SENDER


def test_a_template_without_text_gets_one_derived_from_its_html(app, api, mail):
    template = {
        "name": "welcome",
        "defaultLanguage": "en",
        "channels": {
            "email": {
                "en": {
                    "subject": "Welcome {{ user.attributes.name }}",
                    "html": "<html><body><h1>Hi {{ user.attributes.name }}</h1>"
                    '<p>Read <a href="https://docs.acme-mail.com/start">the guide</a>.</p>'
                    '<p><a href="mailto:help@acme-mail.com">Write to us</a> '
                    '<a href="#top">top</a></p></body></html>',
                }
            }
        },
    }
    assert api.post("/v1/templates", json=template).status_code == 201
    api.post(
        "/v1/users",
        json={"userId": "zoe", "email": "zoe@example.com", "attributes": {"name": "Zoé"}},
    )
    r = api.post("/v1/messages", json={"template": "welcome", "userId": "zoe"})
    assert r.status_code == 200, r.json
    [received] = wait_for(mail.received)
    msg = received.message
    assert msg["Subject"] == "Welcome Zoé"
    text = msg.get_body(("plain",)).get_content()
    assert "Hi Zoé" in text and "https://docs.acme-mail.com/start" in text
    html = msg.get_body(("html",)).get_content()
    assert 'href="mailto:help@acme-mail.com"' in html and 'href="#top"' in html
    assert 'href="https://docs.acme-mail.com/start"' not in html
    assert html.index('<img src="http://localhost:8000/t/o/') < html.index("</body>")


def test_project_settings_override_smtp_from_and_message_overrides_win(app, api, mail):
    r = api.patch(
        "/v1/project",
        json={
            "settings": {
                "email": {
                    "from": "hello@brand-mail.com",
                    "fromName": "Brand",
                    "replyTo": "care@brand-mail.com",
                }
            }
        },
    )
    assert r.status_code == 200, r.json
    api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    _notify(api)
    wait_for(lambda: len(mail.received()) == 1)
    _notify(
        api,
        overrides={
            "email": {"from": "Billing <billing@brand-mail.com>", "replyTo": "bills@brand-mail.com"}
        },
    )
    wait_for(lambda: len(mail.received()) == 2)
    first, second = (r.message for r in mail.received())
    assert (first["From"], first["Reply-To"]) == (
        "Brand <hello@brand-mail.com>",
        "care@brand-mail.com",
    )
    assert first["Message-ID"].endswith("@brand-mail.com>")
    assert (second["From"], second["Reply-To"]) == (
        "Billing <billing@brand-mail.com>",
        "bills@brand-mail.com",
    )


def test_a_transactional_email_has_no_list_unsubscribe(app, api, mail):
    api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    _notify(api, transactional=True)
    [received] = wait_for(mail.received)
    assert received.message["List-Unsubscribe"] is None
    assert received.message["List-Unsubscribe-Post"] is None
    assert "/t/o/" in received.message.get_body(("html",)).get_content()


def test_a_550_recipient_fails_and_is_suppressed(app, api, mail):
    mail.refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
    api.post("/v1/users", json={"userId": "gone", "email": "gone@example.com"})
    _notify(api, user="gone")
    wait_for(lambda: [m.status for m in _messages(app)] == ["failed"])
    assert _messages(app)[0].reason == (
        "recipient refused: 550 5.1.1 <gone@example.com>: no such user"
    )
    assert _suppressions(api) == [("email", "gone@example.com", "bounce")]
    # A hard bounce stops transactional email too.
    _notify(api, user="gone", transactional=True)
    wait_for(lambda: len(_messages(app)) == 2 and _messages(app)[1].status == "suppressed")
    assert mail.received() == []


def test_a_451_recipient_is_retried_with_backoff_then_sent(app, api, mail, sweeper):
    mail.refuse["busy@example.com"] = "451 4.7.1 greylisted, try again later"
    api.post("/v1/users", json={"userId": "busy", "email": "busy@example.com"})
    _notify(api, user="busy")

    def retried():
        [m] = _messages(app)
        return m.status == "queued" and m.attempts == 1 and m.not_before is not None and m

    message = wait_for(retried)
    assert message.reason == "retrying: recipient refused: 451 4.7.1 greylisted, try again later"
    assert _suppressions(api) == []
    del mail.refuse["busy@example.com"]

    def sent():
        sweeper()  # enqueues it once its backoff (2 s) is over
        return _messages(app)[0].status == "sent"

    wait_for(sent, interval=0.5)
    assert len(mail.received()) == 1
    assert _messages(app)[0].attempts == 2
    with app.app_context():
        history = list(
            db.session.scalars(select(MessageStatusChange.status).order_by(MessageStatusChange.id))
        )
    assert history[-2:] == ["queued", "sent"]


def test_a_5xx_at_data_fails_and_suppresses(app, api, mail):
    mail.data_reply = "550 5.7.1 mailbox disabled"
    api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    _notify(api)
    wait_for(lambda: [m.status for m in _messages(app)] == ["failed"])
    assert _messages(app)[0].reason == "message refused: 550 5.7.1 mailbox disabled"
    assert _suppressions(api) == [("email", "ann@example.com", "bounce")]


def test_refused_authentication_fails_with_the_reason_and_suppresses_nothing(app, api, request):
    server = SmtpSink(auth=("mailer", "right")).start()
    request.addfinalizer(server.stop)
    app.config.update(SMTP_URL=f"smtp://mailer:wrong@127.0.0.1:{server.port}", SMTP_FROM=SENDER)
    request.getfixturevalue("workers")
    api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    _notify(api)
    wait_for(lambda: [m.status for m in _messages(app)] == ["failed"])
    assert _messages(app)[0].reason.startswith("SMTP authentication failed: 535")
    assert _suppressions(api) == []


def test_a_refused_connection_is_retried(app, api, request):
    app.config.update(SMTP_URL=f"smtp://127.0.0.1:{free_port()}", SMTP_FROM=SENDER)
    request.getfixturevalue("workers")
    api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    _notify(api)
    message = wait_for(
        lambda: [m for m in _messages(app) if m.status == "queued" and m.attempts == 1]
    )
    assert message[0].reason.startswith("retrying: SMTP 127.0.0.1:")
    assert "ConnectionRefusedError" in message[0].reason


# --- the provider alone: connections, sender checks ------------------------------------------


def _delivery(**changes) -> Delivery:
    base = Delivery(
        message_id=1,
        project_id=1,
        user_id=1,
        channel="email",
        address="ann@example.com",
        content={"subject": "Hi", "html": "<p>Hello</p>"},
    )
    return dataclasses.replace(base, **changes)


def _ctx(url: str, **settings) -> ProviderContext:
    return ProviderContext(
        settings={
            "SMTP_URL": url,
            "SMTP_FROM": SENDER,
            "PUBLIC_URL": "https://cairn.acme-mail.com",
            "SECRET_KEY": "test-secret-key-0123456789",
            **settings,
        }
    )


def test_one_connection_is_reused_and_reopened_when_the_server_dropped_it(sink, request):
    request.addfinalizer(close_connections)
    provider, ctx = SmtpProvider(), _ctx(sink.url)
    for n in range(3):
        assert provider.send(_delivery(message_id=n), ctx).status == "sent"
    assert (len(sink.received()), sink.connections) == (3, 1)
    sink.restart()  # every open connection is dropped
    assert provider.send(_delivery(message_id=9), ctx).status == "sent"
    assert (len(sink.received()), sink.connections) == (4, 2)


def test_an_idle_connection_is_checked_with_noop_before_it_is_used(sink, request, monkeypatch):
    from workers.channels.providers import smtp

    request.addfinalizer(close_connections)
    provider, ctx = SmtpProvider(), _ctx(sink.url)
    assert provider.send(_delivery(), ctx).status == "sent"
    monkeypatch.setattr(smtp, "IDLE_CHECK_SECONDS", 0.0)  # every held connection counts as idle
    assert provider.send(_delivery(message_id=2), ctx).status == "sent"
    assert sink.connections == 1  # the NOOP answered: the same connection
    sink.restart()
    assert provider.send(_delivery(message_id=3), ctx).status == "sent"
    assert (len(sink.received()), sink.connections) == (3, 2)


def test_a_sender_cannot_inject_headers(sink, request):
    request.addfinalizer(close_connections)
    provider, ctx = SmtpProvider(), _ctx(sink.url)
    evil = _delivery(overrides={"email": {"fromName": "Eve\r\nBcc: all@example.com"}})
    assert provider.send(evil, ctx).status == "sent"
    msg = sink.received()[0].message
    assert msg["Bcc"] is None and "all@example.com" not in str(msg["From"]).split("<")[1]
    assert b"\r\nBcc:" not in sink.received()[0].raw
    bad = _delivery(overrides={"email": {"from": "x@y.com\r\nBcc: all@example.com"}})
    result = provider.send(bad, ctx)
    assert result.status == "failed" and result.reason.startswith("from: not an email address")
    assert provider.send(_delivery(), _ctx(sink.url, SMTP_FROM="")).reason == (
        "no sender: set SMTP_FROM or the project's settings.email.from"
    )


def test_a_server_that_never_answers_is_a_retry(request):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    request.addfinalizer(listener.close)
    url = f"smtp://127.0.0.1:{listener.getsockname()[1]}"
    with pytest.raises(Retry, match=r"timed out|TimeoutError"):
        SmtpProvider().send(_delivery(), _ctx(url, SMTP_TIMEOUT_SECONDS=0.5))


@pytest.mark.parametrize("mode", ["starttls", "implicit_tls"])
def test_tls_with_starttls_or_smtps_and_a_certificate_that_is_not_trusted(
    mode, tmp_path, monkeypatch, request
):
    request.addfinalizer(close_connections)
    context, cert_file = tls_server_context(tmp_path)
    provider = SmtpProvider()
    # A certificate nobody vouches for: refused with the reason, not retried forever.
    untrusted = TlsRefusingServer(context, starttls=mode == "starttls")
    request.addfinalizer(untrusted.stop)
    url = (
        f"smtp://127.0.0.1:{untrusted.port}?starttls=1"
        if mode == "starttls"
        else (f"smtps://127.0.0.1:{untrusted.port}")
    )
    result = provider.send(_delivery(), _ctx(url))
    assert result.status == "failed" and result.reason.startswith("SMTP TLS: ")
    assert "certificate" in result.reason
    # Trusted (OpenSSL reads SSL_CERT_FILE when the default context loads its CAs).
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    server = SmtpSink(auth=("mailer", "s3cret"), **{mode: context}).start()
    request.addfinalizer(server.stop)
    request.addfinalizer(close_connections)  # before the server stops (finalizers run LIFO)
    ctx = _ctx(server.url)
    assert ctx.settings["SMTP_URL"].startswith("smtps://" if mode == "implicit_tls" else "smtp://")
    assert provider.send(_delivery(), ctx).status == "sent"
    assert provider.send(_delivery(message_id=2), ctx).status == "sent"
    assert [r.rcpt_tos for r in server.received()] == [["ann@example.com"]] * 2
