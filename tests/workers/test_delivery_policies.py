"""Delivery rules checked right before a send: suppression, quiet hours, caps, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from app.db import db
from app.models.message import Message
from tests.conftest import wait_for


def _by_user(app) -> dict[str, Message]:
    from app.models import User

    with app.app_context():
        rows = db.session.execute(
            select(User.external_id, Message).join(User, User.id == Message.user_id)
        )
        return {u: m for u, m in rows}


def _all(app) -> list[Message]:
    with app.app_context():
        return list(db.session.scalars(select(Message).order_by(Message.id)))


def test_suppressed_addresses_are_not_sent(app, api, workers):
    api.post(
        "/v1/users",
        json=[{"userId": "a", "email": "a@example.com"}, {"userId": "b", "email": "b@example.com"}],
    )
    r = api.post(
        "/v1/suppressions",
        json={"channel": "email", "address": "A@Example.com", "reason": "unsubscribed"},
    )
    assert r.json["added"] == 1
    again = api.post("/v1/suppressions", json={"channel": "email", "address": "a@example.com"})
    assert again.json["added"] == 0
    api.post("/v1/notify", json={"userIds": ["a", "b"], "body": "promo", "channels": ["email"]})
    wait_for(
        lambda: (
            all(m.status != "queued" and m.status != "sending" for m in _all(app))
            and len(_all(app)) == 2
        )
    )
    rows = _by_user(app)
    assert rows["a"].status == "suppressed" and "unsubscribed" in rows["a"].reason
    assert rows["b"].status == "sent"
    assert [m["to"] for m in api.get("/v1/sandbox/messages").json["data"]] == ["b@example.com"]


def test_quiet_hours_defer_in_the_users_zone_and_transactional_bypasses(app, api, workers):
    now = datetime.now(UTC)
    # A window that is "now" in Tokyo for an hour.
    start = (
        now.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")) - timedelta(minutes=5)
    ).strftime("%H:%M")
    end = (
        now.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")) + timedelta(hours=1)
    ).strftime("%H:%M")
    r = api.patch(
        "/v1/project",
        json={"settings": {"quietHours": {"start": start, "end": end, "mode": "defer"}}},
    )
    assert r.status_code == 200, r.json
    api.post(
        "/v1/users",
        json=[
            {"userId": "tokyo", "timezone": "Asia/Tokyo"},
            {"userId": "urgent", "timezone": "Asia/Tokyo"},
        ],
    )
    api.post("/v1/notify", json={"userId": "tokyo", "body": "marketing"})
    api.post(
        "/v1/notify", json={"userId": "urgent", "body": "your code is 123", "transactional": True}
    )
    wait_for(
        lambda: (
            _by_user(app).get("urgent") is not None
            and _by_user(app)["urgent"].status == "sent"
            and _by_user(app)["tokyo"].reason is not None
        )
    )
    tokyo = _by_user(app)["tokyo"]
    assert tokyo.status == "queued" and tokyo.reason.startswith("quiet hours")
    assert tokyo.not_before is not None and tokyo.not_before > now + timedelta(minutes=30)
    # Drop mode suppresses instead, with the reason recorded.
    api.patch(
        "/v1/project",
        json={"settings": {"quietHours": {"start": start, "end": end, "mode": "drop"}}},
    )
    api.post("/v1/notify", json={"userId": "urgent", "body": "marketing 2"})
    wait_for(lambda: any(m.status == "suppressed" for m in _all(app)))
    dropped = next(m for m in _all(app) if m.status == "suppressed")
    assert dropped.reason == "quiet hours"


def test_frequency_cap_across_sends_and_channels(app, api, workers):
    api.patch(
        "/v1/project", json={"settings": {"frequencyCap": {"count": 2, "windowSeconds": 3600}}}
    )
    for n in range(4):
        api.post("/v1/notify", json={"userId": "u", "body": f"promo {n}"})
        wait_for(
            lambda n=n: (
                len(_all(app)) == n + 1 and _all(app)[-1].status not in ("queued", "sending")
            )
        )
    api.post("/v1/notify", json={"userId": "u", "body": "receipt", "transactional": True})
    wait_for(lambda: _all(app)[-1].status not in ("queued", "sending"))
    statuses = [m.status for m in _all(app)]
    assert statuses == ["sent", "sent", "suppressed", "suppressed", "sent"]
    assert "frequency cap" in _all(app)[2].reason


def test_transient_failures_retry_with_backoff_then_fail_with_the_last_reason(
    app, api, sweeper, monkeypatch
):
    from tests.workers import flaky
    from workers.channels import providers
    from workers.delivery import deliver_batch

    monkeypatch.setitem(providers.PROVIDERS, "flaky-sms", "tests.workers.flaky:FlakySms")
    settings = {**app.config, "SMS_PROVIDER": "flaky-sms"}
    flaky.attempts.clear()
    flaky.FAIL_TIMES["value"] = 2
    r = api.post("/v1/messages/sms", json={"body": "hi", "recipients": [{"to": "+14155550199"}]})
    assert r.json["messages"] == 1

    def run_due() -> str:
        with app.app_context():
            db.session.execute(update(Message).values(not_before=None))  # skip the wait
            db.session.commit()
            ids = list(db.session.scalars(select(Message.id)))
            deliver_batch(db.session, ids, settings)
            return db.session.scalar(select(Message.status))

    assert run_due() == "queued"  # attempt 1 failed: back in the queue with a delay
    message = _all(app)[0]
    assert message.reason == "retrying: gateway timeout #1" and message.attempts == 1
    assert run_due() == "queued"
    assert run_due() == "sent"
    # A message that keeps failing ends failed with its last reason.
    flaky.FAIL_TIMES["value"] = 100
    api.post("/v1/messages/sms", json={"body": "x", "recipients": [{"to": "+14155550198"}]})
    for _ in range(6):
        with app.app_context():
            db.session.execute(
                update(Message).where(Message.status == "queued").values(not_before=None)
            )
            db.session.commit()
            ids = list(db.session.scalars(select(Message.id).where(Message.status == "queued")))
            if ids:
                deliver_batch(db.session, ids, settings)
    failed = _all(app)[-1]
    assert failed.status == "failed" and failed.reason.startswith("gave up after 5 attempts")
    history = api.get(f"/v1/messages/{failed.id}").json["history"]
    assert [h["status"] for h in history].count("queued") == 5


def test_sweeper_recovers_lost_jobs_and_crashed_claims(app, api, sweeper, workers):
    from workers.broker import broker
    from workers.embedded import stop_worker

    # Simulate enqueues lost by a broker outage: rows exist, jobs do not.
    stop_worker(workers.worker)
    api.post("/v1/notify", json={"userIds": ["a", "b"], "body": "x"})
    broker.flush_all()
    with app.app_context():
        db.session.execute(
            update(Message).values(enqueued_at=datetime.now(UTC) - timedelta(hours=1))
        )
        # And one claimed by a worker that then died.
        db.session.execute(
            update(Message)
            .where(Message.id == 2)
            .values(status="sending", claimed_at=datetime.now(UTC) - timedelta(hours=1))
        )
        db.session.commit()
    stats = sweeper()
    assert stats.recovered == 1 and stats.enqueued == 2
    assert sweeper().enqueued == 0  # nothing twice while its job is fresh
    import dramatiq

    workers.worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    workers.worker.start()  # the fixture stops it
    wait_for(lambda: [m.status for m in _all(app)] == ["sent", "sent"])
