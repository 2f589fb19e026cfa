"""Preferences, suppression classes and topics through the pipeline (sandbox provider)."""

from __future__ import annotations

from sqlalchemy import select, update

from app.db import db
from app.models import User
from app.models.base import utcnow
from app.models.message import Message, MessageStatusChange, Send
from tests.conftest import wait_for

PENDING = ("queued", "sending")


def _messages(app) -> list[tuple[str, Message]]:
    with app.app_context():
        rows = db.session.execute(
            select(User.external_id, Message)
            .join(User, User.id == Message.user_id)
            .order_by(Message.id)
        )
        return [(u, m) for u, m in rows]


def _settled(app, count: int) -> list[tuple[str, Message]]:
    return wait_for(
        lambda: (
            (rows := _messages(app))
            and len(rows) == count
            and all(m.status not in PENDING for _, m in rows)
            and rows
        )
    )


def _set_preferences(app, user_id: str, prefs: dict) -> None:
    with app.app_context(), db.begin() as session:
        session.execute(update(User).where(User.external_id == user_id).values(preferences=prefs))


def _notify(api, **body) -> None:
    r = api.post("/v1/notify", json=body)
    assert r.status_code < 300, r.json


def test_opted_out_user_gets_transactional_email_but_no_marketing(app, api, workers):
    api.post(
        "/v1/users",
        json=[
            {"userId": "out", "email": "out@example.com"},
            {"userId": "in", "email": "in@example.com"},
        ],
    )
    _set_preferences(app, "out", {"marketing": False})
    _notify(api, userIds=["out", "in"], body="promo", channels=["email"])
    rows = _settled(app, 2)
    by_user = {u: m for u, m in rows}
    assert by_user["out"].status == "suppressed"
    assert by_user["out"].reason == "opted out of marketing"
    assert by_user["in"].status == "sent"
    _notify(api, userIds=["out"], body="your receipt", channels=["email"], transactional=True)
    rows = _settled(app, 3)
    assert rows[-1][0] == "out" and rows[-1][1].status == "sent"
    sent_to = [m["to"] for m in api.get("/v1/sandbox/messages").json["data"]]
    assert sorted(sent_to) == ["in@example.com", "out@example.com"]


def test_channel_opt_out_stops_marketing_on_that_channel_only(app, api, workers):
    api.post("/v1/users", json={"userId": "u", "email": "u@example.com", "phone": "+14155550123"})
    _set_preferences(app, "u", {"channels": {"sms": False}})
    _notify(api, userId="u", body="promo", channels=["email", "sms"])
    rows = _settled(app, 2)
    by_channel = {m.channel: m for _, m in rows}
    assert by_channel["sms"].status == "suppressed"
    assert by_channel["sms"].reason == "opted out of sms"
    assert by_channel["email"].status == "sent"
    _notify(api, userId="u", body="code 1234", channels=["sms"], transactional=True)
    rows = _settled(app, 3)
    assert rows[-1][1].channel == "sms" and rows[-1][1].status == "sent"


def test_stop_blocks_even_transactional_but_unsubscribe_does_not(app, api, workers):
    api.post(
        "/v1/users",
        json=[
            {"userId": "stopped", "phone": "+14155550123"},
            {"userId": "unsub", "phone": "+14155550124"},
        ],
    )
    for address, reason in (("+14155550123", "stop"), ("+14155550124", "unsubscribed")):
        r = api.post(
            "/v1/suppressions", json={"channel": "sms", "address": address, "reason": reason}
        )
        assert r.status_code < 300, r.json
    _notify(
        api, userIds=["stopped", "unsub"], body="code 1234", channels=["sms"], transactional=True
    )
    by_user = dict(_settled(app, 2))
    assert by_user["stopped"].status == "suppressed"
    assert by_user["stopped"].reason == "address suppressed (stop)"
    assert by_user["unsub"].status == "sent"
    _notify(api, userIds=["unsub"], body="promo", channels=["sms"])
    rows = _settled(app, 3)
    assert rows[-1][1].status == "suppressed"
    assert rows[-1][1].reason == "address suppressed (unsubscribed)"


def _topic_send(app, topic: str, user_ids: list[str], *, transactional: bool = False) -> int:
    """A send with a topic (the notify field arrives with the API work), through the outbox."""
    from app.services.outbox import insert_messages, message_row

    with app.app_context(), db.begin() as session:
        users = list(session.scalars(select(User).where(User.external_id.in_(user_ids))))
        now = utcnow()
        send = Send(
            project_id=users[0].project_id,
            kind="notify",
            channels=["email"],
            content={"body": f"about {topic}"},
            transactional=transactional,
            topic=topic,
            created_at=now,
        )
        session.add(send)
        session.flush()
        insert_messages(
            session,
            [
                message_row(send, channel="email", address=u.email, user_id=u.id, now=now)
                for u in users
            ],
        )
        return send.id


def _of_send(app, send_id: int) -> dict[str, Message]:
    def settled():
        rows = [(u, m) for u, m in _messages(app) if m.send_id == send_id]
        return rows if rows and all(m.status not in PENDING for _, m in rows) else None

    return dict(wait_for(settled))


def test_topic_sends_reach_subscribers_only(app, api, client, workers):
    topics = [
        {"key": "news", "name": "News", "default": True},
        {"key": "offers", "name": "Offers", "default": False},
    ]
    assert api.patch("/v1/project", json={"settings": {"topics": topics}}).status_code == 200
    people = ["quiet", "left", "joined", "imported"]
    api.post("/v1/users", json=[{"userId": p, "email": f"{p}@example.com"} for p in people])
    _set_preferences(app, "left", {"topics": {"news": False}})
    _set_preferences(app, "joined", {"topics": {"offers": True}})
    # Added to the topic's audience by the API (an import), without a page visit.
    api.post("/v1/audiences", json={"name": "topic:offers"})
    r = api.post("/v1/audiences/topic:offers/members", json={"userIds": ["imported"]})
    assert r.status_code < 300, r.json

    news = _of_send(app, _topic_send(app, "news", people))
    assert {u: m.status for u, m in news.items()} == {
        "quiet": "sent",
        "left": "suppressed",
        "joined": "sent",
        "imported": "sent",
    }
    assert news["left"].reason == "not subscribed to topic news"
    offers = _of_send(app, _topic_send(app, "offers", people))
    assert {u: m.status for u, m in offers.items()} == {
        "quiet": "suppressed",
        "left": "suppressed",
        "joined": "sent",
        "imported": "sent",
    }
    # An unknown topic counts as opt-in: nobody is in it.
    typo = _of_send(app, _topic_send(app, "nwes", people))
    assert {m.status for m in typo.values()} == {"suppressed"}
    # Transactional sends ignore topics.
    urgent = _of_send(app, _topic_send(app, "offers", people, transactional=True))
    assert {m.status for m in urgent.values()} == {"sent"}


def test_templates_get_unsubscribe_and_preferences_urls(app, api, client, workers):
    api.post("/v1/users", json={"userId": "u", "email": "u@example.com"})
    _notify(
        api,
        userId="u",
        channels=["email"],
        title="Hello",
        body="Manage: {{ preferences_url }} Stop: {{ unsubscribe_url }}",
    )
    rows = _settled(app, 1)
    assert rows[0][1].status == "sent"
    content = api.get("/v1/sandbox/messages").json["data"][0]["content"]
    text = " ".join(str(v) for v in content.values())
    public = app.config["PUBLIC_URL"]
    assert f"{public}/p/" in text and f"{public}/u/" in text
    preferences_path = text.split("Manage: ", 1)[1].split()[0].removeprefix(public)
    page = client.get(preferences_path)
    assert page.status_code == 200 and "Your preferences" in page.get_data(as_text=True)


def test_history_keeps_the_policy_reason(app, api, workers):
    api.post("/v1/users", json={"userId": "out", "email": "out@example.com"})
    _set_preferences(app, "out", {"marketing": False})
    _notify(api, userId="out", body="promo", channels=["email"])
    ((_, message),) = _settled(app, 1)
    with app.app_context():
        history = list(
            db.session.execute(
                select(MessageStatusChange.status, MessageStatusChange.reason).where(
                    MessageStatusChange.message_id == message.id
                )
            )
        )
    assert ("suppressed", "opted out of marketing") in history


def test_a_hard_bounce_outranks_an_earlier_unsubscribe(app, api, project):
    from app.models.message import Suppression
    from workers.channels.base import Delivery, Suppress
    from workers.delivery import EFFECTS

    for address, reason in (("a@example.com", "unsubscribed"), ("b@example.com", "bounce")):
        r = api.post(
            "/v1/suppressions", json={"channel": "email", "address": address, "reason": reason}
        )
        assert r.status_code < 300, r.json

    def apply(address: str, reason: str) -> None:
        d = Delivery(
            message_id=0,
            project_id=project.id,
            user_id=None,
            channel="email",
            address=address,
            content={},
        )
        with app.app_context(), db.begin() as session:
            EFFECTS[Suppress](session, d, Suppress(reason), utcnow())

    apply("a@example.com", "complaint")  # marketing-only on marketing-only: kept as it was
    apply("b@example.com", "complaint")  # a complaint never weakens a bounce
    with app.app_context():
        reasons = {
            a: r for a, r in db.session.execute(select(Suppression.address, Suppression.reason))
        }
    assert reasons == {"a@example.com": "unsubscribed", "b@example.com": "bounce"}
    apply("a@example.com", "bounce")
    with app.app_context():
        reasons = {
            a: r for a, r in db.session.execute(select(Suppression.address, Suppression.reason))
        }
    assert reasons["a@example.com"] == "bounce"
