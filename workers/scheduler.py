"""APScheduler with a persistent job store, run by exactly one process at a time.

The holder of a lock (a PostgreSQL advisory lock on a dedicated connection, or a file lock
beside the SQLite database) runs the scheduler; others wait on standby and take over when the
holder dies (its connection closes, so PostgreSQL releases the lock; the OS releases the file).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, text

log = logging.getLogger(__name__)
ADVISORY_KEY = 0x6361_6972_6E00  # "cairn"


class SchedulerLock:
    """Non-blocking, process-wide lock deciding which scheduler is active."""

    def __init__(self, engine: Engine, instance_dir: str) -> None:
        self.engine = engine
        self.instance_dir = instance_dir
        self._conn: Any = None
        self._file: Any = None

    def acquire(self) -> bool:
        """Try once; True if this process now holds the lock."""
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            try:
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}
                ).scalar()
                conn.commit()
            except Exception:
                conn.close()
                raise
            if got:
                self._conn = conn
                return True
            conn.close()
            return False
        from filelock import FileLock, Timeout

        path = Path(self.engine.url.database or self.instance_dir).with_suffix(".scheduler.lock")
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        self._file = lock
        return True

    def still_held(self) -> bool:
        """False once the PostgreSQL session holding the lock is gone."""
        if self._conn is None:
            return self._file is not None
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except Exception:
            return False

    def release(self) -> None:
        """Give the lock up."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                conn.commit()
            except Exception:
                log.warning("could not unlock the scheduler lock; closing its session frees it")
            finally:
                conn.close()
        if self._file is not None:
            self._file.release()
            self._file = None


def sweep_job() -> None:
    """The sweeper, as a persistent job (referenced by its textual path): it only enqueues.

    The work runs in the `sweep` actor, so a slow sweep occupies a worker, never the
    scheduler's thread (and a lost or stopped scheduler never leaves half a sweep behind).
    """
    from workers.actors import sweep

    sweep.send()


# How often the active scheduler brings campaign jobs in step with the campaign rows (the API
# changes rows only; it never talks to this process's APScheduler).
RECONCILE_SECONDS = 2
CAMPAIGN_JOB_PREFIX = "campaign:"


def reconcile(scheduler: BackgroundScheduler, session: Any, now: Any) -> tuple[int, int]:
    """Add, replace or remove `campaign:<id>` date jobs to match the rows; (changed, removed).

    A missed date job (scheduler down at its time) still runs once when the scheduler is back
    (misfire_grace_time=None, coalesce): `plan` records the run, and `start_run` sends it late
    within its TTL or records it expired; the unique (campaign, occurrence) stops a double.
    """
    from workers.campaign_schedule import desired_jobs

    desired = desired_jobs(session, now)
    session.rollback()  # read-only: end the transaction before touching the job store
    existing = {
        job.id: job
        for job in scheduler.get_jobs(jobstore="default")
        if job.id.startswith(CAMPAIGN_JOB_PREFIX)
    }
    changed = removed = 0
    for job_id, (run_date, args) in desired.items():
        job = existing.get(job_id)
        if (
            job is not None
            and tuple(job.args) == tuple(args)
            and getattr(job.trigger, "run_date", None) == run_date
        ):
            continue
        scheduler.add_job(
            "workers.campaign_schedule:fire",
            "date",
            run_date=run_date,
            args=list(args),
            id=job_id,
            jobstore="default",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,  # late is for start_run to judge (TTL), never dropped here
        )
        changed += 1
    for job_id in existing.keys() - desired.keys():
        with contextlib.suppress(Exception):  # fired and gone meanwhile
            scheduler.remove_job(job_id, jobstore="default")
            removed += 1
    return changed, removed


class SchedulerService:
    """Standby loop: acquire the lock, run the scheduler while held, step down when lost."""

    def __init__(self, engine: Engine, settings: dict[str, Any]) -> None:
        self.engine = engine
        self.settings = settings
        self.lock = SchedulerLock(engine, settings.get("INSTANCE_DIR", "."))
        self.scheduler: BackgroundScheduler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.active = threading.Event()
        self.reconcile_seconds = float(
            settings.get("CAMPAIGN_RECONCILE_SECONDS", RECONCILE_SECONDS)
        )

    def start(self) -> None:
        """Run the standby loop in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="cairn-scheduler", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Block until stopped: wait for the lock, then schedule (and reconcile campaigns).

        The campaign reconcile runs here, in this loop's thread, not as an APScheduler job:
        a job calling the scheduler's API deadlocks with shutdown(wait=True), which holds the
        job-store lock while it waits for running jobs.
        """
        next_reconcile = 0.0
        while not self._stop.is_set():
            if self.scheduler is None:
                if self.lock.acquire():
                    self._start_scheduler()
            elif not self.lock.still_held():
                log.warning("scheduler lock lost; stepping down to standby")
                self._stop_scheduler()
            elif time.monotonic() >= next_reconcile:
                self.reconcile_campaigns()
                next_reconcile = time.monotonic() + self.reconcile_seconds
            self._stop.wait(min(2, self.reconcile_seconds))
        self._stop_scheduler()

    def _start_scheduler(self) -> None:
        # The job store disposes its engine on shutdown: give it its own, never the app's,
        # and without a pool, so a connection its scheduler thread hands back after that
        # dispose is closed instead of being left to the garbage collector.
        from sqlalchemy.pool import NullPool

        from app.db import make_engine

        store_engine = make_engine(
            self.engine.url.render_as_string(hide_password=False), poolclass=NullPool
        )
        store = SQLAlchemyJobStore(engine=store_engine, tablename="apscheduler_jobs")
        scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
        scheduler.start()
        scheduler.add_job(
            "workers.scheduler:sweep_job",
            "interval",
            seconds=self.settings.get("SWEEP_INTERVAL_SECONDS", 1),
            id="sweeper",
            replace_existing=True,
            coalesce=True,  # after downtime, run once, not once per missed second
            max_instances=1,
            misfire_grace_time=30,
        )
        self.scheduler = scheduler
        self.reconcile_campaigns()  # at start too: heal what changed while it was down
        self.active.set()
        log.info("scheduler active (this process holds the lock)")

    def reconcile_campaigns(self) -> None:
        """Campaign rows → this scheduler's `campaign:<id>` jobs (from the loop thread)."""
        from sqlalchemy.orm import Session

        scheduler = self.scheduler
        if scheduler is None:
            return
        try:
            with Session(self.engine) as session:
                reconcile(scheduler, session, datetime.now(UTC))
        except Exception:  # the next run (seconds away) tries again
            log.exception("campaign reconcile failed")

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None:
            # wait=True lets a running sweep finish its commit; a failed shutdown changes nothing.
            with contextlib.suppress(Exception):
                self.scheduler.shutdown(wait=True)
            self.scheduler = None
        self.active.clear()
        self.lock.release()

    def stop(self) -> None:
        """Stop scheduling and release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        else:
            self._stop_scheduler()
