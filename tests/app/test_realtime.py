"""The SSE hubs: which one a configuration gets, and PostgreSQL LISTEN/NOTIFY across hubs."""

from __future__ import annotations

import os
import queue

import psycopg
import pytest

from app.realtime import RESYNC, InProcessHub, PgHub, RedisHub, get_hub

PG = "postgresql+psycopg://u:p@127.0.0.1:5432/cairn"


def test_the_configuration_chooses_the_hub():
    assert isinstance(get_hub({"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": PG}), RedisHub)
    assert isinstance(get_hub({"REDIS_URL": "", "DATABASE_URL": PG}), PgHub)
    assert type(get_hub({"DATABASE_URL": "sqlite:////tmp/x.db"})) is InProcessHub
    # The string form callers used before: a Redis URL or nothing.
    assert isinstance(get_hub("redis://127.0.0.1:1/0"), RedisHub)
    assert type(get_hub(None)) is InProcessHub
    # One hub per configuration and process.
    assert get_hub({"DATABASE_URL": PG}) is get_hub({"DATABASE_URL": PG, "REDIS_URL": None})


def test_a_frame_too_large_for_a_notification_travels_as_a_reference():
    small = PgHub._encode("1:2", {"id": 7, "content": {"body": "hi"}})
    assert '"body":"hi"' in small
    large = PgHub._encode("1:2", {"id": 8, "content": {"body": "é" * 5000}})
    assert len(large.encode()) < 8000 and '"stored": true' in large and '"id": 8' in large


def _get(q: queue.Queue, timeout: float = 30) -> dict:
    return q.get(timeout=timeout)


@pytest.fixture
def pg_url(request) -> str:
    """The test session's PostgreSQL database (LISTEN/NOTIFY need no tables)."""
    if not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("TEST_DATABASE_URL unset")
    return request.getfixturevalue("pg_migrated")


def test_two_hubs_on_one_database_reach_each_other_and_survive_a_lost_connection(pg_url):
    # Two hubs with their own connections stand for two server processes.
    sender, receiver = PgHub(pg_url), PgHub(pg_url)
    try:
        ann = receiver.subscribe("1:10")
        bob = receiver.subscribe("1:11")
        sender.publish_many(
            [
                ("1:10", {"id": 1, "content": {"body": "for ann"}}),
                ("1:11", {"id": 2, "content": {"body": "x" * 9000}}),
            ]
        )
        assert _get(ann) == {"id": 1, "content": {"body": "for ann"}}
        assert _get(bob) == {"id": 2, "stored": True}
        assert ann.empty() and bob.empty()

        # The server drops every hub connection (restart, failover): both reconnect, and
        # streams are told to replay what they may have missed.
        with psycopg.connect(
            pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        ) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'cairn-realtime' AND datname = current_database()"
            ).fetchone()
        assert killed is not None and killed[0] >= 2
        assert _get(ann) == RESYNC and _get(bob) == RESYNC
        sender.publish("1:10", {"id": 3, "content": {"body": "after"}})
        assert _get(ann)["id"] == 3
    finally:
        sender.close()
        receiver.close()
