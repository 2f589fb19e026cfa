"""Triggered campaigns: an event → the campaign's messages, and every skip with its reason.

The checks themselves (where, window, target, holdout, no address) are tested by calling
`on_event` in a session; the way a real event reaches it (POST /v1/events → the event
processor in real workers → the in-app inbox and the sandbox outbox) end to end.
"""

from __future__ import annotations

import importlib.util

import pytest
from sqlalchemy import select

from app.db import db
from app.models import CampaignHoldout, Event, Project, User
from app.models.base import utcnow
from app.models.message import Message, SendSkip
from app.services.campaign_triggers import on_event, send_campaign_to_user
from app.services.projects import user_hash
from journeys.campaigns import in_holdout
from tests.conftest import wait_for

TEMPLATE = {
    "name": "cart",
    "channels": {
        "inapp": {"en": {"title": "Hi {{ user.first_name }}", "body": "{{ params.item }} waits"}},
        "email": {
            "en": {"subject": "Your {{ params.item }}", "text": "Still want {{ params.item }}?"}
        },
    },
}
HAS_PROCESSOR = importlib.util.find_spec("workers.events") is not None
needs_processor = pytest.mark.skipif(
    not HAS_PROCESSOR, reason="workers/events.py (the event processor) is not there yet"
)


@pytest.fixture(autouse=True, scope="module")
def _close_hubs():
    """Stop this process's PostgreSQL listeners before the test database goes away."""
    yield
    from app.realtime import close_hubs

    close_hubs()


def _campaign(api, name="abandoned", **fields):
    body = {
        "name": name,
        "kind": "triggered",
        "channels": {"inapp": "cart", "email": "cart"},
        "trigger": {"event": "add_to_cart"},
        **fields,
    }
    r = api.post("/v1/campaigns", json=body)
    assert r.status_code == 201, r.json
    assert api.post(f"/v1/campaigns/{name}/activate").status_code == 200
    return r.json


def _track(api, *events):
    r = api.post("/v1/events", json=list(events))
    assert r.status_code == 202, r.json


def _run_on_event(app, user_id: str | None, name: str = "add_to_cart"):
    """Call the hook as the event processor does, on the user's latest event of that name."""
    with app.app_context():
        session = db.session
        user = session.scalar(select(User).where(User.external_id == user_id)) if user_id else None
        event = session.scalar(
            select(Event)
            .where(Event.name == name, Event.user_id == (user.id if user else None))
            .order_by(Event.id.desc())
        )
        project = session.get(Project, event.project_id)
        results = on_event(session, project=project, user=user, event=event, now=utcnow())
        session.commit()
        return results


def _skips(app) -> list[tuple[str | None, str, str | None]]:
    with app.app_context():
        rows = db.session.execute(
            select(User.external_id, SendSkip.reason, SendSkip.channel)
            .outerjoin(User, User.id == SendSkip.user_id)
            .order_by(SendSkip.id)
        )
        return [tuple(r) for r in rows]


def _messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def test_where_window_target_holdout_and_address_skips_are_recorded(app, api):
    api.post("/v1/templates", json=TEMPLATE)
    api.post(
        "/v1/users",
        json=[
            {"userId": "pro", "email": "pro@shop.com", "attributes": {"plan": "pro"}},
            {"userId": "free", "attributes": {"plan": "free"}},
        ],
    )
    _campaign(
        api,
        trigger={"event": "add_to_cart", "where": {"attr": "price", "op": "gte", "value": 10}},
        target={"include": ["plan:pro"]},
    )
    _campaign(api, name="later", window={"startsAt": "2099-01-01T00:00:00Z"})
    _track(api, {"name": "add_to_cart", "userId": "pro", "properties": {"price": 5}})
    cheap = _run_on_event(app, "pro")
    assert [(r["result"], r["reason"]) for r in cheap] == [
        ("skipped", "where_not_matched"),
        ("skipped", "outside_window"),
    ]
    _track(api, {"name": "add_to_cart", "userId": "free", "properties": {"price": 50}})
    assert _run_on_event(app, "free")[0]["reason"] == "not_in_target"
    _track(api, {"name": "add_to_cart", "userId": "pro", "properties": {"price": 50}})
    sent = _run_on_event(app, "pro")[0]
    assert sent["result"] == "queued" and len(sent["messageIds"]) == 2  # in-app and email
    # No address: a user without email gets the in-app message and an email skip.
    api.post("/v1/users", json={"userId": "pro2", "attributes": {"plan": "pro"}})
    _track(api, {"name": "add_to_cart", "userId": "pro2", "properties": {"price": 99}})
    res = _run_on_event(app, "pro2")[0]
    assert res["result"] == "queued" and len(res["messageIds"]) == 1
    # An event the trigger's `where` refuses did not trigger the campaign: no skip row.
    # (A no_address skip is written with the messages, after the event's other checks.)
    assert _skips(app) == [
        ("pro", "outside_window", None),
        ("free", "not_in_target", None),
        ("free", "outside_window", None),
        ("pro", "outside_window", None),
        ("pro2", "outside_window", None),
        ("pro2", "no_address", "email"),
    ]


def test_holdout_members_get_nothing_and_are_recorded(app, api):
    api.post("/v1/templates", json=TEMPLATE)
    campaign = _campaign(api, channels={"inapp": "cart"}, holdoutPercent=50)
    ids = [f"u{i}" for i in range(12)]
    api.post("/v1/users", json=[{"userId": u} for u in ids])
    _track(api, *[{"name": "add_to_cart", "userId": u} for u in ids])
    with app.app_context():
        pks = {u.external_id: u.id for u in db.session.scalars(select(User))}
    expected = {u for u in ids if in_holdout(campaign["id"], pks[u], 50)}
    assert 0 < len(expected) < len(ids)  # the test data has both kinds
    outcomes = {u: _run_on_event(app, u)[0] for u in ids}
    held = {u for u, r in outcomes.items() if r.get("reason") == "holdout"}
    assert held == expected
    assert all(outcomes[u]["messageIds"] for u in set(ids) - held)
    with app.app_context():
        members = set(
            db.session.scalars(
                select(User.external_id).join(CampaignHoldout, CampaignHoldout.user_id == User.id)
            )
        )
    assert members == expected
    assert {u for u, reason, _ in _skips(app) if reason == "holdout"} == expected


def test_paused_and_archived_campaigns_send_nothing_and_rules_send_active_ones(app, api):
    api.post("/v1/templates", json=TEMPLATE)
    campaign = _campaign(api, channels={"inapp": "cart"})
    _track(api, {"name": "add_to_cart", "userId": "ann"})
    api.post("/v1/campaigns/abandoned/pause")
    assert _run_on_event(app, "ann") == []
    api.post("/v1/campaigns/abandoned/activate")
    assert _run_on_event(app, "ann")[0]["result"] == "queued"
    # Processing the same event again reaches no address twice (one occurrence per event).
    assert _run_on_event(app, "ann")[0]["result"] == "skipped"
    assert len(_messages(app)) == 1
    # The rule action sendCampaign: the same checks, any active campaign.
    with app.app_context():
        session = db.session
        user = session.scalar(select(User).where(User.external_id == "ann"))
        project = session.get(Project, user.project_id)
        ok = send_campaign_to_user(
            session,
            project=project,
            campaign_id=campaign["id"],
            user=user,
            params={"item": "mug"},
            cause={"rule": 1, "event": 99},
            now=utcnow(),
        )
        session.commit()
    assert ok["result"] == "queued" and len(ok["messageIds"]) == 1
    api.post("/v1/campaigns/abandoned/archive")
    assert _run_on_event(app, "ann") == []
    with app.app_context():
        session = db.session
        user = session.scalar(select(User).where(User.external_id == "ann"))
        project = session.get(Project, user.project_id)
        refused = send_campaign_to_user(
            session,
            project=project,
            campaign_id=campaign["id"],
            user=user,
            params={},
            cause={},
            now=utcnow(),
        )
    assert refused == {
        "campaign": campaign["id"],
        "result": "skipped",
        "reason": "campaign_archived",
        "messageIds": [],
    }


# --- end to end through the event processor -----------------------------------------------


def _processed(app) -> bool:
    with app.app_context():
        return db.session.scalar(select(Event.id).where(Event.processed_at.is_(None))) is None


@needs_processor
def test_an_event_reaches_the_inbox_and_the_sandbox(app, api, project, client, workers):
    api.post("/v1/templates", json=TEMPLATE)
    api.post(
        "/v1/users",
        json={"userId": "ann", "email": "ann@shop.com", "attributes": {"first_name": "Ann"}},
    )
    _campaign(api)
    _track(api, {"name": "add_to_cart", "userId": "ann", "properties": {"item": "red shoes"}})
    params = {
        "key": project.publishable,
        "userId": "ann",
        "userHash": user_hash(project.identity_secret, "ann"),
    }
    inbox = wait_for(lambda: client.get("/v1/inbox", query_string=params).json["data"])
    assert inbox[0]["title"] == "Hi Ann" and inbox[0]["body"] == "red shoes waits"
    mail = wait_for(lambda: api.get("/v1/sandbox/messages?channel=email").json["data"])
    assert mail[0]["to"] == "ann@shop.com" and mail[0]["content"]["subject"] == "Your red shoes"
    # Paused: the next event is processed and sends nothing.
    api.post("/v1/campaigns/abandoned/pause")
    _track(api, {"name": "add_to_cart", "userId": "ann", "properties": {"item": "hat"}})
    wait_for(lambda: _processed(app))
    assert len(_messages(app)) == 2


@needs_processor
def test_a_global_event_sends_to_the_whole_target(app, api, workers):
    api.post("/v1/templates", json=TEMPLATE)
    api.post(
        "/v1/users",
        json=[
            {"userId": u, "attributes": {"plan": p}}
            for u, p in (("a", "pro"), ("b", "pro"), ("c", "free"))
        ],
    )
    _campaign(
        api,
        name="new-post",
        channels={"inapp": "cart"},
        trigger={"event": "new_post"},
        target={"include": ["plan:pro"]},
    )
    _track(api, {"name": "new_post", "properties": {"item": "Issue 9"}})
    wait_for(lambda: len(_messages(app)) == 2)
    wait_for(lambda: {m.status for m in _messages(app)} == {"sent"})
    with app.app_context():
        users = set(
            db.session.scalars(select(User.external_id).join(Message, Message.user_id == User.id))
        )
    assert users == {"a", "b"}
    assert all(m.rendered["body"] == "Issue 9 waits" for m in _messages(app))


@needs_processor
def test_the_target_sees_the_audience_the_same_event_just_joined(app, api, workers):
    """event → rule → audience move → triggered campaign targeting that audience → message."""
    api.post("/v1/templates", json=TEMPLATE)
    assert api.post("/v1/audiences", json={"name": "almost bought"}).status_code == 201
    r = api.post(
        "/v1/rules",
        json={
            "name": "cart",
            "when": {"event": "add_to_cart"},
            "then": [{"addToAudience": "almost bought"}],
        },
    )
    assert r.status_code == 201, r.json
    _campaign(api, channels={"inapp": "cart"}, target={"include": [{"audience": "almost bought"}]})
    _track(api, {"name": "add_to_cart", "userId": "ann", "properties": {"item": "lamp"}})
    _track(api, {"name": "page_view", "userId": "bob"})
    wait_for(lambda: _processed(app))
    [message] = wait_for(lambda: [m for m in _messages(app) if m.status == "sent"])
    assert message.rendered["body"] == "lamp waits"
    with app.app_context():
        assert db.session.get(User, message.user_id).external_id == "ann"
