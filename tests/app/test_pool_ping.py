"""Pooled PostgreSQL connections are checked before use only after they sat idle
(app.db.PING_IDLE_SECONDS): a restart or an idle timeout that closed them costs nothing."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.db import make_engine


@pytest.fixture
def pg_url(request) -> str:
    if not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("TEST_DATABASE_URL unset")
    return request.getfixturevalue("pg_migrated")


def _kill(url: str, pid: int) -> None:
    killer = make_engine(url)
    try:
        with killer.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        killer.dispose()


def _backend(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_closed_while_idle_is_replaced_before_use(pg_url):
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_idle_seconds=0.2)
    try:
        first = _backend(engine)
        _kill(pg_url, first)
        time.sleep(0.5)  # longer than the idle window: the next checkout pings
        second = _backend(engine)  # no error: the ping found it dead, the pool reconnected
        assert second != first
    finally:
        engine.dispose()


def test_a_connection_reused_within_the_window_is_not_pinged(pg_url):
    # The trade-off, shown: no round trip before a prompt reuse, so a connection that broke
    # inside the window fails its statement once; the pool then starts afresh.
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_idle_seconds=60)
    try:
        first = _backend(engine)
        _kill(pg_url, first)
        with pytest.raises(OperationalError):
            _backend(engine)
        assert _backend(engine) != first
    finally:
        engine.dispose()
