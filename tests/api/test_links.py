"""The links inside a sent email: one-click unsubscribe, open pixel, click redirect.

Each test sends a real email through the pipeline to a local SMTP server and follows the links
it finds in what arrived.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from app.db import db
from app.models.base import utcnow
from app.models.channels import MessageEvent
from app.models.message import Message
from app.services import links
from tests.conftest import wait_for
from tests.support.smtp_sink import SmtpSink

BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120 Safari/537.36"
)
TARGET = "https://shop.acme-mail.com/sale?from=email&x=1"


@pytest.fixture
def mail(app, request):
    """An SMTP server, SMTP_URL pointing at it, then the worker threads."""
    sink = SmtpSink().start()
    request.addfinalizer(sink.stop)
    app.config.update(SMTP_URL=sink.url, SMTP_FROM="Acme <news@acme-mail.com>")
    request.getfixturevalue("workers")
    return sink


def _send(api, mail, *, transactional: bool = False):
    """Email ann through /v1/notify; the parsed message that arrived."""
    before = len(mail.received())
    r = api.post(
        "/v1/notify",
        json={
            "userId": "ann",
            "title": "Spring sale",
            "body": "Everything is 20% off.",
            "url": TARGET,
            "channels": ["email"],
            "transactional": transactional,
        },
    )
    assert r.status_code == 202, r.json
    arrived = wait_for(lambda: mail.received()[before:])[0].message
    # The sink has it before the worker records `sent`: wait for the record step too.
    [message_id] = r.json["messageIds"]
    wait_for(lambda: api.get(f"/v1/messages/{message_id}").json["status"] != "sending")
    return arrived


def _path(url: str) -> str:
    return urlsplit(url).path


def _links(message) -> dict[str, str]:
    html = message.get_body(("html",)).get_content()
    [click] = re.findall(r'href="(http://localhost:8000/t/c/[^"]+)"', html)
    [pixel] = re.findall(r'src="(http://localhost:8000/t/o/[^"]+)"', html)
    [unsubscribe] = re.findall(r"<(http://localhost:8000/u/[^>]+)>", message["List-Unsubscribe"])
    return {"click": _path(click), "open": _path(pixel), "unsubscribe": _path(unsubscribe)}


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def _events(app) -> list[tuple[int, str]]:
    with app.app_context():
        rows = db.session.execute(
            select(MessageEvent.message_id, MessageEvent.kind).order_by(MessageEvent.id)
        )
        return [tuple(r) for r in rows]


def _suppressions(api) -> list[tuple[str, str, str]]:
    data = api.get("/v1/suppressions").json["data"]
    return [(s["channel"], s["address"], s["reason"]) for s in data]


def _sent_a_while_ago(app) -> None:
    """Older than the 2 s within which an open can only be a machine's."""
    with app.app_context():
        db.session.execute(update(Message).values(sent_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()


@pytest.fixture
def ann(api):
    r = api.post("/v1/users", json={"userId": "ann", "email": "ann@example.com"})
    assert r.status_code in (200, 201), r.json


def test_one_click_unsubscribe_get_changes_nothing_post_unsubscribes(app, api, client, mail, ann):
    message = _send(api, mail)
    path = _links(message)["unsubscribe"]
    # A link scanner (or the person) opening the link: a page asking to confirm, no change.
    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'<form method="post">' in page.data and b"ann@example.com" in page.data
    assert _suppressions(api) == []
    # The mail client's RFC 8058 one-click POST.
    done = client.post(
        path,
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert done.status_code == 200 and b"unsubscribed" in done.data
    assert _suppressions(api) == [("email", "ann@example.com", "unsubscribed")]
    [first] = _messages(app)
    assert _events(app) == [(first.id, "unsubscribe")]
    assert client.post(path).status_code == 200  # again: still unsubscribed, nothing new
    assert _suppressions(api) == [("email", "ann@example.com", "unsubscribed")]
    # The next marketing email is not sent.
    api.post(
        "/v1/notify", json={"userId": "ann", "title": "More", "body": "sale", "channels": ["email"]}
    )
    wait_for(lambda: len(_messages(app)) == 2 and _messages(app)[1].status == "suppressed")
    assert len(mail.received()) == 1


def test_an_open_is_recorded_once_and_moves_the_status_forward_only(app, api, client, mail, ann):
    found = _links(_send(api, mail))
    _sent_a_while_ago(app)
    [message] = _messages(app)
    for _ in range(2):
        pixel = client.get(found["open"], headers={"User-Agent": BROWSER})
        assert pixel.status_code == 200 and pixel.mimetype == "image/gif"
        assert pixel.headers["Cache-Control"].startswith("no-cache")
    assert _events(app) == [(message.id, "open")]
    assert _messages(app)[0].status == "opened"
    click = client.get(found["click"], headers={"User-Agent": BROWSER})
    assert click.status_code == 302 and click.headers["Location"] == TARGET
    assert client.get(found["click"], headers={"User-Agent": BROWSER}).status_code == 302
    assert _events(app) == [(message.id, "open"), (message.id, "click")]
    assert _messages(app)[0].status == "clicked"
    client.get(found["open"], headers={"User-Agent": BROWSER})
    assert _messages(app)[0].status == "clicked"  # never back to opened


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "Mozilla/5.0",  # Apple Mail Privacy Protection's proxy
        "Mozilla/5.0 (compatible; Barracuda Sentinel)",
        "Proofpoint URL Defense",
        "",
    ],
)
def test_an_open_by_a_proxy_or_scanner_is_a_machine_open(app, api, client, mail, ann, agent):
    found = _links(_send(api, mail))
    _sent_a_while_ago(app)
    assert client.get(found["open"], headers={"User-Agent": agent}).status_code == 200
    [message] = _messages(app)
    assert _events(app) == [(message.id, "machine_open")]
    assert message.status == "sent"


def test_an_open_right_after_sending_is_a_machine_open(app, api, client, mail, ann):
    found = _links(_send(api, mail))
    with app.app_context():  # sent just now, whatever the machine's speed
        db.session.execute(update(Message).values(sent_at=utcnow()))
        db.session.commit()
    client.get(found["open"], headers={"User-Agent": BROWSER})
    [message] = _messages(app)
    assert _events(app) == [(message.id, "machine_open")]
    assert message.status == "sent"


def test_a_tampered_or_foreign_click_token_never_redirects(app, api, client, mail, ann):
    found = _links(_send(api, mail))
    token = found["click"].removeprefix("/t/c/")
    payload, _, signature = token.rpartition(".")
    evil = links.sign(
        "another-secret-0123456789", "click", {"m": 1, "u": "https://evil.example.com"}
    )
    open_token = found["open"].removeprefix("/t/o/").removesuffix(".gif")
    for bad in (
        f"{payload}.{signature[:-2]}xx",
        f"{payload[:-4]}AAAA.{signature}",
        evil,
        open_token,  # a token of another kind
        "not-a-token",
    ):
        r = client.get(f"/t/c/{bad}", headers={"User-Agent": BROWSER})
        assert r.status_code == 404 and "Location" not in r.headers, bad
        assert r.mimetype == "text/html"
    assert _events(app) == []
    assert client.get(f"/t/o/{evil}.gif").headers["X-Cairn-Recorded"] == "0"
    for method in (client.get, client.post):
        assert method(f"/u/{evil}").status_code == 404
    assert _suppressions(api) == []


def test_a_transactional_email_has_tracking_but_no_unsubscribe_header(app, api, mail, ann):
    message = _send(api, mail, transactional=True)
    assert message["List-Unsubscribe"] is None
    assert "/t/c/" in message.get_body(("html",)).get_content()


def test_an_unsubscribe_link_in_the_html_is_not_rewritten(app, api, mail, ann):
    url = links.unsubscribe_url(
        dict(app.config), project_id=1, channel="email", address="ann@example.com", message_id=1
    )
    r = api.post(
        "/v1/notify",
        json={"userId": "ann", "title": "Hi", "body": "x", "url": url, "channels": ["email"]},
    )
    assert r.status_code == 202
    [received] = wait_for(mail.received)
    assert f'href="{url}"' in received.message.get_body(("html",)).get_content()
