"""The Dramatiq broker, chosen by BROKER_URL; imported before any actor is declared."""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.broker import Broker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from workers.middleware import DatabaseSession

# An idle Redis consumer polls its queue with a backoff that grows to the worker timeout
# (Dramatiq's default 1 s, and its CLI cannot change it): a job arriving at a queue that was
# idle waited up to a second, per hop (event → processing → delivery: ~2 s each at 20 events/s
# in bench/trigger.py). Capped here; an idle worker process then polls each of its queues at
# most this often (a Redis round trip each).
REDIS_POLL_MS = int(os.environ.get("REDIS_POLL_MS", "50"))


def _redis_broker(url: str, middleware: list[Any]) -> Broker:
    from dramatiq.brokers.redis import RedisBroker

    class PromptRedisBroker(RedisBroker):
        """RedisBroker whose consumers never back off longer than REDIS_POLL_MS."""

        def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
            return super().consume(queue_name, prefetch, min(timeout, REDIS_POLL_MS))

    return PromptRedisBroker(url=url, middleware=middleware)


def build_broker(url: str) -> Broker:
    """Redis for redis://, RabbitMQ for amqp://, the in-process stub broker when empty."""
    middleware = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(),
        DatabaseSession(),
    ]
    if url.startswith(("redis://", "rediss://")):
        broker: Broker = _redis_broker(url, middleware)
    elif url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)
    else:
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    return broker


broker = build_broker(os.environ.get("BROKER_URL", ""))
dramatiq.set_broker(broker)


def is_embedded() -> bool:
    """True when the broker lives in this process (no BROKER_URL)."""
    return isinstance(broker, StubBroker)
