"""app.db.bulk_insert / bulk_update_pg: one statement, the same rows as the ORM would write."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from app.db import bulk_insert, bulk_update_pg, db, ids_in
from app.models.base import utcnow
from app.models.message import Message, Send
from tests.conftest import make_project


def _send(project_id, now, **extra):
    return {
        "project_id": project_id,
        "kind": "campaign",
        "channels": ["inapp", "push"],  # a list value: one JSON value, not an array dimension
        "content": {"token": "é\"'\\n", "nested": {"a": [1, None, True]}},
        "ttl_seconds": None,
        "transactional": True,
        "target": None,
        "template_id": None,
        "topic": None,
        "urgency": "high",
        "status": "done",
        "cursor": 0,
        "recipients": 2,
        "deduplicated": 0,
        "created_at": now,
        "lease_until": None,
        **extra,
    }


def test_rows_read_back_as_written_and_conflicts_are_skipped(app):
    project = make_project(app)
    now = utcnow()
    with app.app_context(), db.begin() as session:
        made = bulk_insert(
            session,
            Send,
            [_send(project.id, now, dedup_key=f"k{i}") for i in range(3)],
            returning=("id", "dedup_key"),
        )
        assert sorted(k for _, k in made) == ["k0", "k1", "k2"]
        sends = {s.dedup_key: s for s in session.scalars(select(Send))}
        assert sends["k1"].channels == ["inapp", "push"]
        assert sends["k1"].content == {"token": "é\"'\\n", "nested": {"a": [1, None, True]}}
        assert sends["k1"].created_at == now and sends["k1"].transactional is True
        send_id = made[0][0]
        row = {
            "project_id": project.id,
            "send_id": send_id,
            "dedup_key": "d",
            "transactional": True,
            "status": "queued",
            "expires_at": now + timedelta(hours=1),
            "created_at": now,
            "updated_at": now,
            "enqueued_at": now,
            "attempts": 0,
            "increment_count": 1,
            "user_id": None,
            "channel": "inapp",
            "increment_id": None,
            "content": None,
            "overrides": None,
        }
        first = bulk_insert(
            session,
            Message,
            [{**row, "address": "a"}, {**row, "address": "b"}],
            conflict=["project_id", "dedup_key", "channel", "address"],
            returning=("id",),
        )
        again = bulk_insert(
            session,
            Message,
            [{**row, "address": "a"}, {**row, "address": "c"}],
            conflict=["project_id", "dedup_key", "channel", "address"],
            returning=("id",),
        )
        assert len(first) == 2 and len(again) == 1  # "a" was reached already
        ids = [r[0] for r in first]
        assert sorted(
            session.scalars(select(Message.id).where(ids_in(session, Message.id, ids)))
        ) == sorted(ids)


def test_a_naive_datetime_is_refused(app):
    project = make_project(app)
    with (
        app.app_context(),
        db.begin() as session,
        pytest.raises((ValueError, StatementError), match="naive"),
    ):
        bulk_insert(
            session, Send, [_send(project.id, utcnow().replace(tzinfo=None), dedup_key="x")]
        )


def test_bulk_update_keeps_a_reported_status(app, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("bulk_update_pg is PostgreSQL's path (SQLite keeps the executemany)")
    project = make_project(app)
    now = utcnow()
    with app.app_context(), db.begin() as session:
        [(send_id,)] = bulk_insert(session, Send, [_send(project.id, now)], returning=("id",))
        base = {
            "project_id": project.id,
            "send_id": send_id,
            "dedup_key": "d",
            "transactional": True,
            "expires_at": None,
            "created_at": now,
            "updated_at": now,
            "enqueued_at": now,
            "attempts": 1,
            "increment_count": 1,
            "user_id": None,
            "channel": "sms",
            "increment_id": None,
            "content": None,
            "overrides": None,
        }
        made = bulk_insert(
            session,
            Message,
            [
                {**base, "address": "+1", "status": "sending"},
                {**base, "address": "+2", "status": "delivered"},
            ],
            returning=("id", "address"),
        )
        ids = {address: i for i, address in made}
        later = now + timedelta(seconds=5)
        bulk_update_pg(
            session,
            Message,
            [
                {
                    "id": ids[a],
                    "status": "sent",
                    "reason": None,
                    "updated_at": later,
                    "rendered": {"body": ["x", {"y": 1}]},
                }
                for a in ("+1", "+2")
            ],
            keep_when="t.status IN ('delivered')",
            kept=("status",),
        )
        got = {m.address: m for m in session.scalars(select(Message))}
        assert got["+1"].status == "sent" and got["+2"].status == "delivered"
        assert got["+1"].rendered == {"body": ["x", {"y": 1}]} and got["+2"].updated_at == later
