"""POST /v1/messages/cancel: by send, by Idempotency-Key, by campaign (a fan-out stopped
between chunks, and one stopped while a chunk is being written)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, select, text, update

from app.db import db
from app.models import Campaign
from app.models.message import Message, Send
from tests.conftest import wait_for


def _statuses(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Message.status).order_by(Message.id)))


def _claim_one(app) -> None:
    """Mark the first message as claimed by a delivery worker."""
    with app.app_context():
        first = db.session.scalar(select(Message.id).order_by(Message.id).limit(1))
        db.session.execute(update(Message).where(Message.id == first).values(status="sending"))
        db.session.commit()


def test_cancel_by_send_leaves_in_flight_messages_alone(app, api):
    sent = api.post("/v1/notify", json={"userIds": ["a", "b", "c"], "body": "hi"}).json
    _claim_one(app)
    r = api.post("/v1/messages/cancel", json={"sendId": sent["id"]})
    assert r.status_code == 200, r.json
    assert r.json == {"cancelled": 2, "inFlight": 1, "fanOutsStopped": 0}
    assert _statuses(app) == ["sending", "cancelled", "cancelled"]
    history = api.get(f"/v1/messages/{sent['messageIds'][1]}").json["history"]
    assert [(h["status"], h["reason"]) for h in history] == [
        ("queued", None),
        ("cancelled", "cancelled by request"),
    ]
    # Again: nothing more to cancel.
    again = api.post("/v1/messages/cancel", json={"sendId": sent["id"]})
    assert again.json == {"cancelled": 0, "inFlight": 1, "fanOutsStopped": 0}


def test_cancel_by_idempotency_key(app, api):
    key = {"Idempotency-Key": "welcome-batch-7"}
    api.post("/v1/notify", json={"userIds": ["a", "b"], "body": "hi"}, headers=key)
    other = api.post("/v1/notify", json={"userId": "c", "body": "other"}).json
    r = api.post("/v1/messages/cancel", json={"idempotencyKey": "welcome-batch-7"})
    assert r.json["cancelled"] == 2
    assert _statuses(app) == ["cancelled", "cancelled", "queued"]
    assert api.get(f"/v1/messages/{other['messageIds'][0]}").json["status"] == "queued"
    missing = api.post("/v1/messages/cancel", json={"idempotencyKey": "nope"})
    assert missing.status_code == 404 and "idempotencyKey" in missing.json["errors"]


def test_cancel_needs_exactly_one_valid_field(api):
    for body in [
        {},
        {"sendId": 1, "campaign": "x"},
        {"sendId": 1, "idempotencyKey": "k", "campaign": 3},
        {"sendId": "1"},
        {"campaign": None},
        {"campaign": True},
        {"idempotencyKey": ""},
        {"sendId": 1, "other": 2},
    ]:
        r = api.post("/v1/messages/cancel", json=body)
        assert r.status_code == 422, (body, r.json)
        assert set(r.json["errors"]) & {"campaign", "idempotencyKey", "sendId", "other"}, body


def test_unknown_send_or_campaign_is_a_404(api):
    for body, field in [
        ({"sendId": 999}, "sendId"),
        ({"campaign": "Nope"}, "campaign"),
        ({"campaign": 999}, "campaign"),
        ({"campaign": "9" * 30}, "campaign"),
    ]:
        r = api.post("/v1/messages/cancel", json=body)
        assert r.status_code == 404, (body, r.json)
        assert field in r.json["errors"]


def _campaign_broadcast(app, api, project, users: int) -> tuple[int, int]:
    """A broadcast send (not fanned out yet) attributed to a campaign: (campaign id, send id)."""
    api.post("/v1/users", json=[{"userId": f"u{i}"} for i in range(users)])
    send_id = api.post("/v1/notify", json={"broadcast": True, "body": "Sale"}).json["id"]
    with app.app_context():
        campaign = Campaign(project_id=project.id, name="Summer sale", kind="broadcast")
        db.session.add(campaign)
        db.session.flush()
        db.session.execute(update(Send).where(Send.id == send_id).values(campaign_id=campaign.id))
        db.session.commit()
        return campaign.id, send_id


def test_cancel_by_campaign_stops_a_fan_out_between_chunks(app, api, project, monkeypatch, sweeper):
    import workers.fanout as fanout

    campaign_id, send_id = _campaign_broadcast(app, api, project, users=6)
    monkeypatch.setattr(fanout, "CHUNK", 2)
    answers = []
    real_now = fanout.utcnow
    calls = iter(range(100))

    def now_then_cancel():
        # Each chunk starts with `utcnow()`: the cancel lands after the first chunk committed.
        if next(calls) == 1:
            answers.append(api.post("/v1/messages/cancel", json={"campaign": "Summer sale"}).json)
        return real_now()

    monkeypatch.setattr(fanout, "utcnow", now_then_cancel)
    with app.app_context(), db.sessionmaker() as session:
        created = fanout.fan_out(session, send_id)
    assert created == 2  # one chunk, then the fan-out saw the cancel and stopped
    assert answers == [{"cancelled": 2, "inFlight": 0, "fanOutsStopped": 1}]
    assert _statuses(app) == ["cancelled", "cancelled"]
    with app.app_context():
        send = db.session.get(Send, send_id)
        assert send.status == "cancelled" and send.finished_at is not None
    # The stalled-fan-out sweep does not pick a cancelled send up again.
    monkeypatch.setattr(fanout, "utcnow", real_now)
    assert sweeper().sends == 0
    # By id too: the campaign's sends are found either way.
    again = api.post("/v1/messages/cancel", json={"campaign": campaign_id})
    assert again.json == {"cancelled": 0, "inFlight": 0, "fanOutsStopped": 0}


def test_cancel_waits_for_the_chunk_being_written_and_cancels_it_too(
    app, api, project, monkeypatch, database_url
):
    """PostgreSQL: a chunk holds its send's row lock; the cancel waits, then sees its rows."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises the two transactions: nothing can interleave")
    import workers.fanout as fanout

    _, send_id = _campaign_broadcast(app, api, project, users=6)
    monkeypatch.setattr(fanout, "CHUNK", 2)
    engine = create_engine(database_url)
    answers = []
    real_enqueue = fanout.enqueue_delivery
    chunks = iter(range(100))

    def cancel_now() -> None:
        answers.append(api.post("/v1/messages/cancel", json={"campaign": "Summer sale"}).json)

    def enqueue_while_cancel_waits(session, ids):
        real_enqueue(session, ids)
        if next(chunks) == 0:  # inside the first chunk's transaction, before its commit
            threading.Thread(target=cancel_now).start()

            def cancel_blocked() -> int:
                with engine.connect() as watch:
                    return watch.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE "
                            "wait_event_type = 'Lock' AND query ILIKE 'UPDATE sends%'"
                        )
                    ).scalar()

            wait_for(cancel_blocked, 10)

    monkeypatch.setattr(fanout, "enqueue_delivery", enqueue_while_cancel_waits)
    with app.app_context(), db.sessionmaker() as session:
        created = fanout.fan_out(session, send_id)
    wait_for(lambda: answers, 10)
    engine.dispose()
    # Which of the two takes the send's row lock when the first chunk commits is up to the
    # database (a woken waiter does not always beat a new locker): the fan-out may write one
    # more chunk before the cancel gets in. Either way the cancel sees every chunk committed
    # before it, and the fan-out stops at the next one: everything created ends cancelled.
    assert created in (2, 4)
    assert answers == [{"cancelled": created, "inFlight": 0, "fanOutsStopped": 1}]
    assert _statuses(app) == ["cancelled"] * created
