"""Embedded mode: Dramatiq worker threads and the scheduler inside the server process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import dramatiq
from flask import Flask

from workers import runtime

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    """Handles to what `start` launched."""

    worker: Any
    scheduler: Any

    def stop(self) -> None:
        """Stop the worker threads and the scheduler."""
        if self.worker is not None:
            stop_worker(self.worker)
        if self.scheduler is not None:
            self.scheduler.stop()


def stop_worker(worker: Any) -> None:
    """Stop a Dramatiq worker and detach the middleware it added to the shared broker.

    Dramatiq's Worker adds a middleware on start and never removes it; in one long-lived
    process (tests, restarts) they would pile up.
    """
    worker.stop(timeout=10_000)
    middleware = worker.broker.middleware
    middleware[:] = [m for m in middleware if getattr(m, "worker", None) is not worker]


def start(app: Flask, *, scheduler: bool | None = None) -> Embedded:
    """Bind jobs to the app's database; start workers if the broker is in-process."""
    import workers.actors  # noqa: F401 - declares the actors
    from app.db import db
    from workers.broker import broker, is_embedded
    from workers.scheduler import SchedulerService

    assert db.engine is not None
    runtime.configure(engine=db.engine, settings=dict(app.config))
    worker = None
    if is_embedded():
        worker = dramatiq.Worker(
            broker, worker_threads=app.config["EMBEDDED_WORKER_THREADS"], worker_timeout=100
        )
        worker.start()
    service = None
    if app.config["EMBEDDED_SCHEDULER"] if scheduler is None else scheduler:
        service = SchedulerService(db.engine, dict(app.config))
        service.start()
    log.info("embedded workers=%s scheduler=%s", worker is not None, service is not None)
    return Embedded(worker, service)
