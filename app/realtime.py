"""Fan-out of in-app messages to open SSE streams: in-process, Redis pub/sub or PostgreSQL.

Subscribers get dicts on a queue: a frame (`{"id", "content", ...}` as published), a reference
(`{"id", "stored": True}`: load the message from the database), or `RESYNC` (the hub may have
lost notifications while reconnecting: replay from the database).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

log = logging.getLogger(__name__)
CHANNEL_PREFIX = "cairn:inapp:"
RESYNC: dict[str, Any] = {"resync": True}


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

    def _broadcast(self, payload: dict[str, Any]) -> None:
        with self._lock:
            keys = list(self._subscribers)
        for key in keys:
            self._dispatch(key, payload)


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

        lost = False
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(CHANNEL_PREFIX + "*")
                if lost:
                    # Messages published while we were away are gone: streams replay them.
                    self._broadcast(RESYNC)
                    lost = False
                ready.set()
                for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    key = message["channel"].decode()[len(CHANNEL_PREFIX) :]
                    self._dispatch(key, json.loads(message["data"]))
            except Exception as err:  # Redis restarted: reconnect; streams replay from the DB
                log.warning("Redis hub listener lost its connection: %s", err)
                lost = True
                ready.set()
                time.sleep(1)


class PgHub(InProcessHub):
    """Publishes with PostgreSQL NOTIFY; one LISTEN connection per process feeds local subscribers.

    For a multi-process `cairn serve` on PostgreSQL without Redis. A NOTIFY payload must stay
    under 8000 bytes, so a frame that does not fit travels as a reference and the stream loads
    the message from the database (it is committed: delivery publishes after its commit).
    """

    CHANNEL = "cairn_inapp"
    # PostgreSQL refuses payloads of 8000 bytes or more; keep a margin for the envelope.
    MAX_PAYLOAD_BYTES = 7900
    # How often the listener wakes to check its connection and whether it should stop.
    POLL_SECONDS = 2.0
    # libpq options: notice a dead server or network within about a minute, even when idle.
    CONNECT_OPTIONS: ClassVar[dict[str, Any]] = {
        "autocommit": True,
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 60_000,
        "application_name": "cairn-realtime",
    }

    def __init__(self, database_url: str) -> None:
        super().__init__()
        from sqlalchemy.engine import make_url

        # Connections of our own, outside the SQLAlchemy pool: a LISTEN connection is held
        # forever, and a pooled one would hand its notifications to whoever borrows it next.
        self._dsn = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self._publish_lock = threading.Lock()
        self._publisher: Any = None
        self._start_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()

    def subscribe(self, key: str) -> queue.Queue[dict[str, Any]]:
        """Subscribe locally; the first subscriber starts the listener and waits for LISTEN."""
        q = super().subscribe(key)
        self._ensure_listener()
        return q

    def publish(self, key: str, payload: dict[str, Any]) -> None:
        """Publish to every process's subscribers."""
        self.publish_many([(key, payload)])

    def publish_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """One NOTIFY statement for a whole batch (its notifications go out when it ends)."""
        if not items:
            return
        import psycopg

        notes = [self._encode(key, payload) for key, payload in items]
        with self._publish_lock:
            for attempt in (1, 2):
                try:
                    if self._publisher is None or self._publisher.closed:
                        self._publisher = psycopg.connect(self._dsn, **self.CONNECT_OPTIONS)
                    self._publisher.execute(
                        "SELECT pg_notify(%s, note) FROM unnest(%s::text[]) AS note",
                        (self.CHANNEL, notes),
                    )
                    return
                except psycopg.OperationalError:
                    # A restarted server or a dropped connection: reconnect once.
                    self._close_publisher()
                    if attempt == 2:
                        raise

    def close(self) -> None:
        """Stop the listener and close both connections (tests; process exit closes them too)."""
        self._stop.set()
        if self._listener is not None:
            # It sees the flag within POLL_SECONDS (closing its connection from here could
            # free it under the thread waiting on it).
            self._listener.join(timeout=self.POLL_SECONDS + 5)
        with self._publish_lock:
            self._close_publisher()

    def _close_publisher(self) -> None:
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                self._publisher.close()
            self._publisher = None

    @classmethod
    def _encode(cls, key: str, payload: dict[str, Any]) -> str:
        note = json.dumps({"k": key, "p": payload}, separators=(",", ":"))
        if len(note.encode()) <= cls.MAX_PAYLOAD_BYTES:
            return note
        return json.dumps({"k": key, "p": {"id": payload["id"], "stored": True}})

    def _ensure_listener(self) -> None:
        with self._start_lock:
            if self._listener is None or not self._listener.is_alive():
                self._ready.clear()
                self._stop.clear()
                self._listener = threading.Thread(
                    target=self._listen, name="cairn-pg-hub", daemon=True
                )
                self._listener.start()
        # Replay-then-listen needs LISTEN active before the stream replays. If the database
        # is unreachable, give up waiting: the listener sends RESYNC once it is back.
        self._ready.wait(timeout=15)

    def _listen(self) -> None:
        import psycopg

        delay = 0.5
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, **self.CONNECT_OPTIONS) as conn:
                    conn.execute(f"LISTEN {self.CHANNEL}")
                    if not first:
                        # Notifications sent while no LISTEN was active are lost for good.
                        self._broadcast(RESYNC)
                    first = False
                    delay = 0.5
                    self._ready.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self.POLL_SECONDS):
                            self._receive(note.payload)
                        # Between waits: a dead connection raises here instead of hanging.
                        conn.execute("SELECT 1")
            except Exception as err:  # server restart, network, failover: reconnect
                if self._stop.is_set():
                    break
                log.warning("PostgreSQL hub listener lost its connection: %s", err)
                first = False
                self._ready.set()
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _receive(self, raw: str) -> None:
        try:
            note = json.loads(raw)
            key, payload = note["k"], note["p"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed %s notification", self.CHANNEL)
            return
        self._dispatch(key, payload)


_hubs: dict[tuple[int, str, str], InProcessHub] = {}
_hubs_lock = threading.Lock()


def get_hub(config: Mapping[str, Any] | str | None = None) -> InProcessHub:
    """The process-wide hub for this configuration (the app config or the worker settings).

    Redis when REDIS_URL is set, PostgreSQL LISTEN/NOTIFY when DATABASE_URL is PostgreSQL,
    in-process otherwise (SQLite runs one server process). A plain string is taken as the
    Redis URL, as callers passed it before PostgreSQL could carry the frames.
    """
    if isinstance(config, Mapping):
        redis_url = config.get("REDIS_URL") or ""
        database_url = config.get("DATABASE_URL") or ""
    else:
        redis_url, database_url = config or "", ""
    if redis_url:
        kind, target = "redis", redis_url
    elif database_url.startswith("postgresql"):
        kind, target = "postgresql", database_url
    else:
        kind, target = "inprocess", ""
    # Keyed by process: a hub's connections and listener thread never cross a fork.
    key = (os.getpid(), kind, target)
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None:
            if kind == "redis":
                hub = RedisHub(target)
            elif kind == "postgresql":
                hub = PgHub(target)
            else:
                hub = InProcessHub()
            _hubs[key] = hub
        return hub


def close_hubs() -> None:
    """Close this process's PostgreSQL hubs (tests, before their database is dropped)."""
    with _hubs_lock:
        hubs = [hub for (pid, _, _), hub in _hubs.items() if pid == os.getpid()]
        for key in [k for k in _hubs if k[0] == os.getpid()]:
            del _hubs[key]
    for hub in hubs:
        if isinstance(hub, PgHub):
            hub.close()
