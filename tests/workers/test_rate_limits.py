"""Per-provider rate limits: slots shared across sessions, throttled messages wait for free."""

from __future__ import annotations

import threading
from datetime import timedelta
from itertools import pairwise

from sqlalchemy import select

from app.db import db
from app.models.base import utcnow
from app.models.channels import ProviderRate
from app.models.message import Message, MessageStatusChange
from app.services.rate_limits import rate_for, reserve_slot
from tests.conftest import wait_for


def test_rate_for_reads_the_environment_and_the_project_overrides():
    env = {"RATE_LIMITS": "smtp=14, twilio=1"}
    assert rate_for("smtp", env, {}) == 14
    assert rate_for("twilio", env, {}) == 1
    assert rate_for("webpush", env, {}) is None
    assert rate_for("smtp", {}, {}) is None
    assert rate_for("smtp", env, {"rateLimits": {"smtp": 2.5}}) == 2.5
    assert rate_for("sandbox", env, {"rateLimits": {"sandbox": 4}}) == 4
    # A malformed environment value (refused at start) never stops deliveries.
    assert rate_for("smtp", {"RATE_LIMITS": "smtp=fast"}, {}) is None


def test_slots_are_unique_and_spaced_across_concurrent_sessions(app, project):
    rate = 10.0
    slots: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = utcnow()

    def reserve(n: int) -> None:
        try:
            for _ in range(n):
                with db.sessionmaker() as session:
                    slot = reserve_slot(
                        session, project_id=project.id, provider="smtp", rate=rate, now=utcnow()
                    )
                    session.commit()
                with lock:
                    slots.append(slot)
        except BaseException as err:  # reported below
            errors.append(err)

    with app.app_context():
        threads = [threading.Thread(target=reserve, args=(10,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert len(slots) == 40 and len(set(slots)) == 40
        ordered = sorted(slots)
        gaps = [(b - a).total_seconds() for a, b in pairwise(ordered)]
        assert min(gaps) >= 1 / rate - 1e-6
        assert ordered[0] >= start - timedelta(seconds=1)
        # The next free slot is after the last one given out.
        with db.sessionmaker() as session:
            row = session.scalar(select(ProviderRate).where(ProviderRate.project_id == project.id))
        assert row.next_at >= ordered[-1] + timedelta(seconds=1 / rate) - timedelta(microseconds=1)
        # A slot in the past is never handed out: an idle provider starts again at now.
        later = ordered[-1] + timedelta(seconds=60)
        with db.sessionmaker() as session:
            assert (
                reserve_slot(session, project_id=project.id, provider="smtp", rate=rate, now=later)
                == later
            )
            session.commit()


def _sms(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def test_messages_over_the_limit_wait_without_using_attempts(app, api, workers, sweeper):
    rate, count = 4, 12
    r = api.patch("/v1/project", json={"settings": {"rateLimits": {"sandbox": rate}}})
    assert r.status_code == 200, r.json
    people = [f"p{i}" for i in range(count)]
    r = api.post(
        "/v1/users",
        json=[{"userId": p, "phone": f"+1415555{i:04d}"} for i, p in enumerate(people)],
    )
    assert r.status_code < 300, r.json
    r = api.post("/v1/notify", json={"userIds": people, "body": "hello", "channels": ["sms"]})
    assert r.status_code < 300, r.json

    def all_sent():
        rows = _sms(app)
        if len(rows) == count and all(m.status == "sent" for m in rows):
            return rows
        assert not any(m.status == "failed" for m in rows), [m.reason for m in rows]
        sweeper()  # the scheduler's job: enqueue throttled messages when their slot comes
        return None

    rows = wait_for(all_sent, timeout=90, interval=0.1)
    sent = sorted(m.sent_at for m in rows)
    spread = (sent[-1] - sent[0]).total_seconds()
    assert spread >= 2.5, spread
    # No more than the rate: the k-th send is at least k/rate after the first (less the
    # moment between the first slot and the first send).
    for k, at in enumerate(sent):
        assert (at - sent[0]).total_seconds() >= k / rate - 0.25, (k, sent)
    # Waiting for a slot used up no attempt.
    assert [m.attempts for m in rows] == [1] * count
    with app.app_context():
        history = list(
            db.session.execute(
                select(MessageStatusChange.status, MessageStatusChange.reason).where(
                    MessageStatusChange.status == "throttled"
                )
            )
        )
    assert len(history) >= count - rate
    assert all(reason.startswith("rate limit sandbox 4/s: waiting until ") for _, reason in history)


def test_a_database_error_while_reserving_a_slot_requeues_the_message(app, api, monkeypatch):
    """A slot's own short transaction failing (SQLite locked past its busy timeout, the
    database restarting) says nothing about the message: it is queued again, never failed."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from workers import delivery
    from workers.delivery import deliver_batch

    r = api.patch("/v1/project", json={"settings": {"rateLimits": {"sandbox": 4}}})
    assert r.status_code == 200, r.json
    api.post("/v1/users", json={"userId": "p", "phone": "+14155550100"})
    r = api.post("/v1/notify", json={"userId": "p", "body": "hello", "channels": ["sms"]})
    assert r.status_code < 300, r.json
    calls = []

    def unavailable(session, **kwargs):
        calls.append(kwargs)
        if session.get_bind().dialect.name == "postgresql":  # the server drops the connection
            session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        session.execute(text("SELECT * FROM no_such_table"))  # SQLite: an OperationalError

    monkeypatch.setattr(delivery, "reserve_slot", unavailable)
    with app.app_context():
        ids = list(db.session.scalars(select(Message.id)))
        try:
            deliver_batch(db.session, ids, dict(app.config))
        except OperationalError:  # pragma: no cover - the point of the test
            raise AssertionError("the batch failed instead of requeueing the message") from None
        [message] = _sms(app)
    assert calls, "the slot was never asked for"
    assert message.status == "queued", (message.status, message.reason)
    assert message.reason.startswith("retrying: database unavailable")
    assert message.not_before is not None and message.attempts == 0
