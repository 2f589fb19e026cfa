"""Group commit for event ingestion: many requests' events in one transaction and one commit.

A commit costs an fsync (several ms here), which capped one-event requests at a few hundred a
second when each ran its own transaction. Each server process gets one `IngestWriter`: request
threads validate their events, `submit` them and wait; a background thread takes everything
queued (optionally waiting `max_wait` after the first arrival to gather more), stores it with
`track_events` in one transaction, commits, and only then answers every waiting request with
its own counts. So "an accepted event is a committed row before the response" still holds.

The writer is an entry point (like a worker middleware): it owns its sessions and commits. While
more work is queued, a writer thread keeps its pooled connection checked out between groups (never
a session or an open transaction): checking it out again costs the pool's pre-ping round trip,
which took a third of a group's time here. Once the queue is empty, or after any failure, the
connection goes back to the pool before the requests are answered.

Measured with 8 concurrent one-event requests on one process: gathering for 2 ms after the first
arrival made groups bigger but throughput lower than taking whatever queued during the previous
commit, so `max_wait` defaults to 0. Several writer threads per process (4 by default in the
app) overlap their round trips and GIL waits; a request goes to whichever is free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.errors import DomainError
from app.models import Event
from app.services.events import EventIn, TrackResult, track_events

log = logging.getLogger(__name__)

EXTENSION = "cairn_ingest_writer"
_create_lock = threading.Lock()


class IngestUnavailable(DomainError):
    """The writer did not answer in time; the events may or may not be stored."""

    code = 503


class _Recount(Exception):
    """Some events were already stored (a concurrent write): redo the group checking first."""


@dataclass
class _Pending:
    """One request's events, waiting for a group commit."""

    project_id: int
    events: Sequence[EventIn]
    future: Future[TrackResult]
    queued_at: float
    # Filled by the writer: the events to store (first sight of their messageId in the group).
    store: list[EventIn] = field(default_factory=list)


class IngestWriter:
    """Stores submitted events in groups, one transaction and one commit per group."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_events: int = 1000,
        max_wait: float = 0.0,
        threads: int = 1,
        idle_seconds: float = 10.0,
    ) -> None:
        self.pid = os.getpid()
        self.max_events = max_events
        self.max_wait = max_wait
        self.idle_seconds = idle_seconds
        self._engine = engine
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._max_threads = threads
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._held = 0  # > 0: writer threads take nothing (see held())
        self.groups = 0  # groups committed, for tests and diagnostics

    # -- request side ---------------------------------------------------------------------------

    def submit(self, *, project_id: int, events: Sequence[EventIn]) -> Future[TrackResult]:
        """Queue one request's events; the future resolves once they are committed."""
        future: Future[TrackResult] = Future()
        with self._cond:
            self._queue.append(_Pending(project_id, events, future, time.monotonic()))
            self._queued_events += len(events)
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < self._max_threads:
                # Started lazily (and again after an idle exit or a crash), so a fresh process
                # after fork, or an idle one, holds no thread.
                thread = threading.Thread(target=self._run, name="cairn-ingest-writer", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify()
        return future

    def track(
        self, *, project_id: int, events: Sequence[EventIn], timeout: float = 10.0
    ) -> TrackResult:
        """Store events through the next group commit; counts are this request's own."""
        if not events:
            return TrackResult()
        return self.wait(self.submit(project_id=project_id, events=events), timeout)

    def wait(self, future: Future[TrackResult], timeout: float = 10.0) -> TrackResult:
        """A submitted request's counts once committed; IngestUnavailable after `timeout` s."""
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.cancel():
                raise IngestUnavailable(
                    "Event storage is overloaded: nothing stored, retry later"
                ) from None
            if future.done():  # answered just as the wait gave up
                return future.result()
            # Already being written: it may still commit, so a retry must reuse the messageIds.
            raise IngestUnavailable(
                "Event storage is slow: retry later with the same messageIds"
            ) from None

    # -- writer thread --------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the writer threads (a later submit starts them again)."""
        with self._cond:
            self._stopping = True
            threads = list(self._threads)
            self._cond.notify_all()
        for thread in threads:
            thread.join(timeout)
        with self._cond:
            self._stopping = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Keep the writer threads from taking work inside this block; on exit, everything
        queued meanwhile goes as one group (so tests build groups without timing races)."""
        with self._cond:
            self._held += 1
        try:
            yield
        finally:
            with self._cond:
                self._held -= 1
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken by a writer thread."""
        with self._cond:
            return len(self._queue)

    @property
    def running(self) -> int:
        """Writer threads alive now."""
        with self._cond:
            return sum(1 for t in self._threads if t.is_alive())

    def _run(self) -> None:
        link = _Link(self._engine)
        try:
            while True:
                group = self._take()
                if group is None:
                    return
                if not group:
                    continue
                try:
                    self._write(group, link)
                except BaseException as err:  # the thread must not die with requests waiting
                    log.exception("ingest group failed")
                    link.release()
                    for pending in group:
                        if not pending.future.done():
                            pending.future.set_exception(err)
        finally:
            link.release()

    def _take(self) -> list[_Pending] | None:
        """The next group (possibly empty if all were cancelled); None to exit when idle."""
        with self._cond:
            idle_until = time.monotonic() + self.idle_seconds
            while not self._queue or self._held:
                left = idle_until - time.monotonic()
                if not self._queue and (left <= 0 or self._stopping):
                    me = threading.current_thread()
                    self._threads = [t for t in self._threads if t is not me]
                    return None
                # Held with work queued: wait for held() to end (it notifies), not for idleness.
                self._cond.wait(max(left, 0.0) if not self._queue else None)
            # Gather more arrivals for a moment, counted from the first one's arrival: when the
            # previous commit took longer than that, the group goes at once.
            gather_until = self._queue[0].queued_at + self.max_wait
            while self._queued_events < self.max_events:
                left = gather_until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            group: list[_Pending] = []
            size = 0
            while self._queue and (
                not group or size + len(self._queue[0].events) <= self.max_events
            ):
                pending = self._queue.popleft()
                self._queued_events -= len(pending.events)
                if pending.future.set_running_or_notify_cancel():
                    group.append(pending)
                    size += len(pending.events)
            return group

    def _write(self, group: list[_Pending], link: _Link) -> None:
        """Store a group; if it fails for another reason than the database being unreachable,
        store each request alone so that one bad request cannot fail the others."""
        outcomes: list[TrackResult | BaseException]
        try:
            outcomes = list(self._store(group, link))
            self.groups += 1
        except OperationalError as err:
            link.release()
            outcomes = [err] * len(group)
        except Exception as err:
            link.release()
            outcomes = [err]
            if len(group) > 1:
                log.warning("ingest group of %d failed (%s): storing each alone", len(group), err)
                outcomes = [self._store_alone(pending, link) for pending in group]
        # Give the connection back before answering when there is nothing more to write, so an
        # idle process holds none (and a test that disposes the engine next finds it returned).
        with self._cond:
            idle = not self._queue
        if idle:
            link.release()
        for pending, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def _store_alone(self, pending: _Pending, link: _Link) -> TrackResult | BaseException:
        try:
            return self._store([pending], link)[0]
        except Exception as err:
            link.release()
            return err

    def _store(self, group: list[_Pending], link: _Link) -> list[TrackResult]:
        """One transaction for the group; per-request counts, committed on return."""
        # A messageId seen earlier in the group is a duplicate for the later request only.
        seen: dict[int, set[str]] = {}
        for pending in group:
            ids = seen.setdefault(pending.project_id, set())
            pending.store = []
            for ev in pending.events:
                if ev.message_id is not None:
                    if ev.message_id in ids:
                        continue
                    ids.add(ev.message_id)
                pending.store.append(ev)
        # The first attempt assumes every messageId is new (the common case). If the database
        # already held some, track_events tells how many but not which: roll back and redo the
        # group, looking them up first. A concurrent writer racing in between makes the counts
        # disagree again, so retry a few times.
        for attempt in range(4):
            try:
                with Session(link.get(), expire_on_commit=False) as session, session.begin():
                    return self._store_once(session, group, check_existing=attempt > 0)
            except _Recount:
                continue
        raise RuntimeError("ingest group: stored counts kept changing under concurrent writes")

    def _store_once(
        self, session: Session, group: list[_Pending], *, check_existing: bool
    ) -> list[TrackResult]:
        by_project: dict[int, list[_Pending]] = {}
        for pending in group:
            by_project.setdefault(pending.project_id, []).append(pending)
        existing: dict[int, set[str]] = {}
        # In project order, so that two writers lock users in the same order.
        for project_id in sorted(by_project):
            events = [ev for pending in by_project[project_id] for ev in pending.store]
            known: set[str] = set()
            if check_existing:
                known = _stored_message_ids(session, project_id, events)
                events = [
                    ev for ev in events if ev.message_id is None or ev.message_id not in known
                ]
            stored = track_events(session, project_id=project_id, events=events)
            if stored.accepted != len(events):
                raise _Recount
            existing[project_id] = known
        results = []
        for pending in group:
            known = existing[pending.project_id]
            accepted = sum(
                1 for ev in pending.store if ev.message_id is None or ev.message_id not in known
            )
            results.append(
                TrackResult(accepted=accepted, duplicates=len(pending.events) - accepted)
            )
        return results


class _Link:
    """A writer thread's connection, kept checked out between groups (see the module doc)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def get(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self.release()
            self._conn = self._engine.connect()
        return self._conn

    def release(self) -> None:
        """Give the connection back to the pool (rolled back there); the next get() checks out."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken: the pool discards it
                log.debug("closing the ingest connection failed", exc_info=True)
            self._conn = None


def _stored_message_ids(session: Session, project_id: int, events: Sequence[EventIn]) -> set[str]:
    ids = [ev.message_id for ev in events if ev.message_id is not None]
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        found.update(
            session.scalars(
                select(Event.message_id).where(
                    Event.project_id == project_id, Event.message_id.in_(ids[start : start + 500])
                )
            )
        )
    return found


def writer_for(app: Flask) -> IngestWriter:
    """This process's writer for `app`, created on first use (and anew after a fork)."""
    writer: IngestWriter | None = app.extensions.get(EXTENSION)
    if writer is not None and writer.pid == os.getpid():
        return writer
    with _create_lock:
        writer = app.extensions.get(EXTENSION)
        if writer is None or writer.pid != os.getpid():
            writer = IngestWriter(
                app.extensions["cairn_db"].engine,
                max_events=app.config.get("INGEST_GROUP_MAX_EVENTS", 1000),
                max_wait=app.config.get("INGEST_GROUP_WAIT_SECONDS", 0.0),
                threads=app.config.get("INGEST_WRITER_THREADS", 4),
            )
            app.extensions[EXTENSION] = writer
    return writer
