"""One active scheduler at a time; a standby takes over when the holder goes away."""

from __future__ import annotations

import threading

from sqlalchemy import text

from app.db import db
from tests.conftest import wait_for
from workers.scheduler import SchedulerLock, SchedulerService


class CountingLock(SchedulerLock):
    """The real scheduler lock, counting the attempts it refused (to wait on, not to sleep)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._refusals = 0
        self._counted = threading.Lock()

    def acquire(self) -> bool:
        got = super().acquire()
        if not got:
            with self._counted:
                self._refusals += 1
        return got

    @property
    def refusals(self) -> int:
        """Attempts that found the lock held elsewhere."""
        with self._counted:
            return self._refusals


def _standby(app) -> SchedulerService:
    """A scheduler service whose lock counts its refused attempts."""
    settings = dict(app.config)
    service = SchedulerService(db.engine, settings)
    service.lock = CountingLock(db.engine, settings["INSTANCE_DIR"])
    return service


def test_a_scheduler_stays_on_standby_while_the_lock_is_held_elsewhere(app):
    from workers import runtime

    settings = dict(app.config)
    runtime.configure(engine=db.engine, settings=settings)
    # Another process's scheduler: the same lock (advisory lock / file lock), held directly.
    holder = SchedulerLock(db.engine, settings["INSTANCE_DIR"])
    assert holder.acquire()
    service = _standby(app)
    try:
        service.start()
        # Every attempt is refused and none starts a scheduler: the standby only becomes
        # active through a successful acquire, so two refusals with it inactive prove it
        # keeps waiting rather than running beside the holder.
        wait_for(lambda: service.lock.refusals >= 2 or service.active.is_set(), timeout=30)
        assert not service.active.is_set()
        assert service.scheduler is None
        holder.release()
        wait_for(lambda: service.active.is_set(), timeout=30)
    finally:
        holder.release()
        service.stop()


def test_only_one_scheduler_is_active_and_a_standby_takes_over(app):
    from workers import runtime

    settings = dict(app.config)
    runtime.configure(engine=db.engine, settings=settings)
    first = SchedulerService(db.engine, settings)
    second = _standby(app)
    first.start()
    try:
        wait_for(lambda: first.active.is_set(), timeout=30)
        second.start()
        # The standby retries every 2 s: wait for it to have been refused twice.
        wait_for(lambda: second.lock.refusals >= 2 or second.active.is_set(), timeout=30)
        assert not second.active.is_set()
        with db.engine.connect() as conn:
            jobs = conn.execute(text("SELECT id FROM apscheduler_jobs")).scalars().all()
        assert jobs == ["sweeper"]
        first.stop()
        wait_for(lambda: second.active.is_set(), timeout=30)
    finally:
        first.stop()
        second.stop()


def test_the_sweeper_job_runs_from_the_persistent_store(app, api, request):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update

    from app.models.message import Message

    api.post("/v1/notify", json={"userId": "u", "body": "x", "ttlSeconds": 60})
    with app.app_context():
        db.session.execute(
            update(Message).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        db.session.commit()
    # The workers (they run the sweep actor the job enqueues) start only now, with the queue
    # flushed: the delivery the POST enqueued is gone, so only a sweep can expire the message.
    request.getfixturevalue("workers")
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
