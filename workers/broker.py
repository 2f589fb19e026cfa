"""The Dramatiq broker, chosen by BROKER_URL; imported before any actor is declared."""

from __future__ import annotations

import os

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
        from dramatiq.brokers.redis import RedisBroker

        broker: Broker = RedisBroker(url=url, middleware=middleware)
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
