"""Segment and broadcast sends: rows created in chunks, resumable, deduplicated by address."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.db import db
from app.models import User
from app.models.message import Message, Send
from tests.conftest import wait_for
from workers import fanout


def _messages(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.execute(
            select(User.external_id, Message.channel, Message.address)
            .join(User, User.id == Message.user_id)
            .order_by(Message.id)
        )
        return [tuple(r) for r in rows]


def test_segment_send_reaches_exactly_the_segment_on_each_channel(app, api, workers):
    api.post(
        "/v1/users",
        json=[
            {"userId": "p1", "email": "p1@example.com", "attributes": {"plan": "pro"}},
            {"userId": "p2", "attributes": {"plan": "pro", "role": "admin"}},
            {"userId": "f1", "email": "f1@example.com", "attributes": {"plan": "free"}},
            {"userId": "p3", "email": "p1@example.com", "attributes": {"plan": "pro"}},
        ],
    )
    r = api.post(
        "/v1/notify/batch",
        json={
            "segment": "plan:pro",
            "title": "Pro news",
            "body": "x",
            "channels": ["inapp", "email"],
        },
    )
    assert r.status_code == 202 and r.json["status"] == "fanning_out"
    send_id = r.json["id"]
    wait_for(
        lambda: len(_messages(app)) == 4 and all(m.status == "sent" for m in api_messages(app))
    )
    got = sorted(_messages(app))
    assert got == sorted(
        [
            ("p1", "inapp", _inapp(app, "p1")),
            ("p2", "inapp", _inapp(app, "p2")),
            ("p3", "inapp", _inapp(app, "p3")),
            ("p1", "email", "p1@example.com"),
        ]
    )
    with app.app_context():
        send = db.session.get(Send, send_id)
        assert (send.status, send.recipients, send.deduplicated) == ("done", 4, 1)
    log = api.get(f"/v1/messages?sendId={send_id}").json
    assert len(log["data"]) == 4, log


def api_messages(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message)))


def _inapp(app, external_id: str) -> str:
    with app.app_context():
        return f"user:{db.session.scalar(select(User.id).where(User.external_id == external_id))}"


def test_broadcast_fan_out_resumes_after_a_crash_without_duplicates(app, api, monkeypatch):
    api.post("/v1/users", json=[{"userId": f"u{i}"} for i in range(7)])
    api.post("/v1/events", json={"name": "x", "anonymousId": "anon"})  # not reachable in-app
    r = api.post("/v1/notify", json={"broadcast": True, "body": "all"})
    send_id = r.json["id"]
    monkeypatch.setattr(fanout, "CHUNK", 3)
    real = fanout.insert_for_users
    calls = {"n": 0}

    def crash_on_second_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(fanout, "insert_for_users", crash_on_second_chunk)
    with app.app_context(), pytest.raises(RuntimeError):
        fanout.fan_out(db.session, send_id)
    with app.app_context():
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(Message)) == 3
        assert db.session.get(Send, send_id).status == "fanning_out"
    monkeypatch.setattr(fanout, "insert_for_users", real)
    with app.app_context():
        created = fanout.fan_out(db.session, send_id)
        assert created == 4
        send = db.session.get(Send, send_id)
        assert (send.status, send.recipients) == ("done", 7)
        users = db.session.scalar(select(func.count(func.distinct(Message.user_id))))
        assert users == 7


def test_stored_segment_by_name_and_audience_membership_target_a_send(app, api, workers):
    api.post("/v1/users", json=[{"userId": "a"}, {"userId": "b"}, {"userId": "c"}])
    assert api.post("/v1/audiences", json={"name": "vip"}).status_code == 201
    api.post("/v1/audiences/vip/members", json={"userIds": ["a", "c"]})
    r = api.post("/v1/segments", json={"name": "vips", "filter": {"audience": "vip", "op": "in"}})
    assert r.status_code == 201, r.json
    r = api.post("/v1/notify", json={"segment": "vips", "body": "for vips"})
    assert r.status_code == 202, r.json
    wait_for(lambda: sorted(u for u, _, _ in _messages(app)) == ["a", "c"])
    detail = api.get("/v1/users/a").json
    assert [m["name"] for m in detail["audiences"]] == ["vip"]
    missing = api.post("/v1/notify", json={"segment": "nope", "body": "x"})
    assert missing.status_code == 404 and "segment" in missing.json["errors"]


def test_sweeper_turns_expired_memberships_into_recorded_leaves(app, api, sweeper):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from app.models.audience import AudienceChange, AudienceMember

    api.post("/v1/audiences", json={"name": "trial"})
    api.post("/v1/audiences/trial/members", json={"userIds": ["a"], "ttlSeconds": 3600})
    with app.app_context():
        db.session.execute(
            update(AudienceMember).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        db.session.commit()
    assert api.get("/v1/users/a").json["audiences"] == []  # expired counts at once
    assert sweeper().memberships == 1
    assert sweeper().memberships == 0
    with app.app_context():
        changes = [
            (c.kind, c.cause)
            for c in db.session.scalars(select(AudienceChange).order_by(AudienceChange.id))
        ]
    assert changes == [("joined", "api"), ("left", "ttl")]
