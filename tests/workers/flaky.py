"""A provider for tests of the retry machinery: fails transiently a set number of times."""

from __future__ import annotations

import threading

from workers.channels.base import Delivery, ProviderContext, Retry, SendResult

_lock = threading.Lock()
attempts: dict[int, int] = {}
FAIL_TIMES = {"value": 2}


class FlakySms:
    """Raises Retry for the first FAIL_TIMES attempts of each message, then sends."""

    name = "flaky-sms"
    channels = frozenset({"sms"})

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        with _lock:
            attempts[delivery.message_id] = attempts.get(delivery.message_id, 0) + 1
            n = attempts[delivery.message_id]
        if n <= FAIL_TIMES["value"]:
            raise Retry(f"gateway timeout #{n}", delay=0.01)
        return SendResult("sent", provider_id=f"flaky-{delivery.message_id}")
