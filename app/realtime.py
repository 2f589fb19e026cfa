"""Fan-out of in-app messages to open SSE streams: in-process, or Redis pub/sub across processes."""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

log = logging.getLogger(__name__)
CHANNEL_PREFIX = "cairn:inapp:"


def stream_key(project_id: int, user_id: int) -> str:
    """The pub/sub key of one user's streams."""
    return f"{project_id}:{user_id}"


class InProcessHub:
    """Streams and publishers in the same process (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[queue.Queue[dict[str, Any]]]] = {}

    def subscribe(self, key: str) -> queue.Queue[dict[str, Any]]:
        """A queue receiving every payload published to `key` from now on."""
        q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.setdefault(key, set()).add(q)
        return q

    def unsubscribe(self, key: str, q: queue.Queue[dict[str, Any]]) -> None:
        """Stop delivering to `q`."""
        with self._lock:
            subs = self._subscribers.get(key)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    del self._subscribers[key]

    def publish(self, key: str, payload: dict[str, Any]) -> None:
        """Hand `payload` to every local subscriber of `key` (a full queue drops, replay heals)."""
        self._dispatch(key, payload)

    def publish_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish several payloads (a delivered batch)."""
        for key, payload in items:
            self.publish(key, payload)

    def _dispatch(self, key: str, payload: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subscribers.get(key, ()))
        for q in subs:
            try:
                q.put_nowait(payload)
            except queue.Full:
                log.warning("SSE subscriber queue full for %s; it will replay on reconnect", key)


class RedisHub(InProcessHub):
    """Publishes through Redis; one listener thread per process feeds local subscribers."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis

        self._redis = redis.Redis.from_url(url)
        self._listener: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def subscribe(self, key: str) -> queue.Queue[dict[str, Any]]:
        """Subscribe locally, starting the shared Redis listener on first use."""
        self._ensure_listener()
        return super().subscribe(key)

    def publish(self, key: str, payload: dict[str, Any]) -> None:
        """Publish to every process's subscribers."""
        self._redis.publish(CHANNEL_PREFIX + key, json.dumps(payload))

    def publish_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """One pipelined round trip for a whole batch instead of one per message."""
        if not items:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, payload in items:
            pipe.publish(CHANNEL_PREFIX + key, json.dumps(payload))
        pipe.execute()

    def _ensure_listener(self) -> None:
        with self._start_lock:
            if self._listener is not None and self._listener.is_alive():
                return
            ready = threading.Event()
            self._listener = threading.Thread(
                target=self._listen, args=(ready,), name="cairn-redis-hub", daemon=True
            )
            self._listener.start()
            ready.wait(timeout=5)

    def _listen(self, ready: threading.Event) -> None:
        import time

        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(CHANNEL_PREFIX + "*")
                ready.set()
                for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    key = message["channel"].decode()[len(CHANNEL_PREFIX) :]
                    self._dispatch(key, json.loads(message["data"]))
            except Exception as err:  # Redis restarted: reconnect; streams replay from the DB
                log.warning("Redis hub listener lost its connection: %s", err)
                ready.set()
                time.sleep(1)


_hubs: dict[str, InProcessHub] = {}
_hubs_lock = threading.Lock()


def get_hub(redis_url: str | None) -> InProcessHub:
    """The process-wide hub for this configuration."""
    key = redis_url or ""
    with _hubs_lock:
        if key not in _hubs:
            _hubs[key] = RedisHub(redis_url) if redis_url else InProcessHub()
        return _hubs[key]
