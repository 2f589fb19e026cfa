"""Every Dramatiq actor, in one module that `dramatiq workers.actors` loads.

The broker is configured (workers.broker) before any actor is declared. Actors take ids and are
idempotent: a redelivered job finds its rows already claimed and does nothing twice.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from app.models.base import utcnow
from app.services.outbox import DELIVERY_BATCH
from workers import runtime
from workers.broker import broker  # noqa: F401 - must be set before the actors below
from workers.coalesce import Coalescer
from workers.delivery import deliver_batch
from workers.fanout import fan_out
from workers.middleware import job_session
from workers.sweeper import sweep as run_sweep

# Dramatiq's defaults are 20 retries over 7 days and a 10-minute limit; ours are explicit.
# Per-message provider retries live in the database (not_before), so these only cover
# infrastructure failures (database or broker hiccups), where a quick retry is right.
JOB_OPTIONS: dict[str, Any] = {
    "max_retries": 10,
    "min_backoff": 500,
    "max_backoff": 30_000,
    "time_limit": 300_000,
}


def _in_job_session(body: Any) -> Any:
    """body(session, ids, settings) on the running job's session, rolled back if it fails
    (a coalesced batch that failed is run again job by job on the same session)."""

    def run(ids: list[int]) -> None:
        session = job_session()
        try:
            body(session, ids, runtime.settings())
        except BaseException:
            session.rollback()
            raise

    return run


def _runners(name: str, default: int) -> Any:
    return lambda: int(runtime.settings().get(name, default))


# Jobs waiting while others of their actor run in this process are merged (workers.coalesce).
_deliveries = Coalescer(
    "deliver_messages",
    _in_job_session(deliver_batch),
    runners=_runners("DELIVERY_BATCH_RUNNERS", 4),
    max_items=DELIVERY_BATCH,
)


def _process(session: Any, ids: list[int], settings: dict[str, Any]) -> None:
    from workers.events import process_events as run

    run(session, ids, settings)


_events = Coalescer(
    "process_events",
    _in_job_session(_process),
    runners=_runners("EVENT_BATCH_RUNNERS", 2),
    max_items=500,
)


@dramatiq.actor(queue_name="deliver", **JOB_OPTIONS)
def deliver_messages(message_ids: list[int]) -> None:
    """Deliver a batch of queued messages."""
    _deliveries(message_ids)


@dramatiq.actor(queue_name="fanout", **JOB_OPTIONS)
def fan_out_send(send_id: int) -> None:
    """Create the message rows of a segment or broadcast send, chunk by chunk."""
    fan_out(job_session(), send_id)


@dramatiq.actor(queue_name="events", **JOB_OPTIONS)
def process_events(event_ids: list[int]) -> None:
    """Run rules, triggered campaigns and goals for committed events, each user's in order."""
    _events(event_ids)


@dramatiq.actor(queue_name="campaigns", **JOB_OPTIONS)
def plan_campaign(campaign_id: int, occurrence: str) -> None:
    """A scheduled campaign time came (APScheduler): create its runs (per zone if local)."""
    from workers.campaign_schedule import plan as run

    run(job_session(), campaign_id, occurrence, runtime.settings())


@dramatiq.actor(queue_name="campaigns", **JOB_OPTIONS)
def start_campaign_run(run_id: int) -> None:
    """A campaign run is due: create its sends (they fan out), or record it expired."""
    from workers.campaign_schedule import start_run as run

    run(job_session(), run_id, runtime.settings())


# Enqueued every second by the scheduler: a sweep that waited longer than this in the queue is
# skipped (the next one does the same work), so an outage does not leave a pile of them.
@dramatiq.actor(queue_name="sweep", max_retries=0, max_age=30_000, time_limit=300_000)
def sweep() -> None:
    """Run every sweep task once (workers.sweeps)."""
    run_sweep(job_session(), utcnow(), runtime.settings())


@dramatiq.actor(queue_name="journeys", **JOB_OPTIONS)
def call_journey_webhook(call_id: int) -> None:
    """Make a journey webhook step's signed call once, save its answer, advance the run."""
    from workers.journey_webhooks import call_webhook

    call_webhook(job_session(), call_id, runtime.settings())
