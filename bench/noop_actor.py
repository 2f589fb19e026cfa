"""A no-op Dramatiq actor: the broker's own ceiling, the baseline of bench/fanout.py.

Run as `python -m dramatiq bench.noop_actor --processes 2 --threads 8` with BENCH_NOOP_REDIS set
to the same Redis the app's broker uses. It declares the same middleware as workers/broker.py
(minus the database session) so the per-job overhead compared is Dramatiq's and Redis's alone.
Each job INCRs a counter and records the first/last processing times.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

URL = os.environ.get("BENCH_NOOP_REDIS", "redis://127.0.0.1:6379/5")
QUEUE = "bench_noop"
COUNTER = "bench:noop:count"
FIRST = "bench:noop:first"
LAST = "bench:noop:last"

broker = RedisBroker(
    url=URL,
    middleware=[
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(),
    ],
)
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(URL)


@dramatiq.actor(
    queue_name=QUEUE, max_retries=10, min_backoff=500, max_backoff=30_000, time_limit=300_000
)
def noop(payload: list[int]) -> None:
    """Do nothing but count (the payload is a 250-id list, like deliver_messages')."""
    now = time.time()
    pipe = _client.pipeline(transaction=False)
    pipe.incr(COUNTER)
    pipe.setnx(FIRST, now)
    pipe.set(LAST, now)
    pipe.execute()
