"""One active scheduler at a time; a standby takes over when the holder goes away."""

from __future__ import annotations

from sqlalchemy import text

from app.db import db
from tests.conftest import wait_for
from workers.scheduler import SchedulerService


def test_only_one_scheduler_is_active_and_a_standby_takes_over(app):
    from workers import runtime

    settings = dict(app.config)
    runtime.configure(engine=db.engine, settings=settings)
    first = SchedulerService(db.engine, settings)
    second = SchedulerService(db.engine, settings)
    first.start()
    try:
        wait_for(lambda: first.active.is_set(), timeout=30)
        second.start()
        # The standby keeps trying every 2 s; give it several chances to (wrongly) start.
        import time

        time.sleep(5)
        assert not second.active.is_set()
        with db.engine.connect() as conn:
            jobs = conn.execute(text("SELECT id FROM apscheduler_jobs")).scalars().all()
        assert jobs == ["sweeper"]
        first.stop()
        wait_for(lambda: second.active.is_set(), timeout=30)
    finally:
        first.stop()
        second.stop()


def test_the_sweeper_job_runs_from_the_persistent_store(app, api):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update

    from app.models.message import Message

    api.post("/v1/notify", json={"userId": "u", "body": "x", "ttlSeconds": 60})
    with app.app_context():
        db.session.execute(
            update(Message).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        db.session.commit()
    from workers import runtime

    runtime.configure(engine=db.engine, settings=dict(app.config))
    service = SchedulerService(db.engine, dict(app.config))
    service.start()
    try:

        def expired() -> bool:
            with app.app_context():
                return db.session.scalar(select(Message.status)) == "expired"

        wait_for(expired, timeout=30)
    finally:
        service.stop()
