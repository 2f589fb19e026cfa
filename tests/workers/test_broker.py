"""The Redis broker's consumers poll an idle queue at most every REDIS_POLL_MS."""

from __future__ import annotations

import os
import time

import pytest

from workers.broker import REDIS_POLL_MS, build_broker

REDIS_URL = os.environ.get("TEST_REDIS_URL")
# Under pytest-xdist, the tests that use the shared real brokers run in one worker.
pytestmark = pytest.mark.xdist_group("brokers")


@pytest.mark.skipif(not REDIS_URL, reason="TEST_REDIS_URL is not set")
def test_a_job_sent_to_an_idle_queue_is_fetched_within_the_poll_cap():
    broker = build_broker(REDIS_URL)
    queue = f"cairn-poll-test-{os.getpid()}"
    broker.declare_queue(queue)
    consumer = broker.consume(queue, prefetch=1, timeout=1000)  # Dramatiq's worker default
    try:
        assert consumer.timeout == REDIS_POLL_MS < 1000
        from dramatiq import Message

        waits = []
        for _ in range(3):
            for _ in range(12):  # idle long enough for Dramatiq's backoff to reach its maximum
                assert next(consumer) is None
            broker.enqueue(
                Message(queue_name=queue, actor_name="x", args=(), kwargs={}, options={})
            )
            started = time.monotonic()
            while (message := next(consumer)) is None:
                assert time.monotonic() - started < 10
            waits.append(time.monotonic() - started)
            consumer.ack(message)
        # Uncapped, an idle consumer sleeps 0.5-1 s between polls (Dramatiq's jittered maximum).
        assert min(waits) < 0.3, waits
    finally:
        consumer.close()
        broker.flush(queue)
