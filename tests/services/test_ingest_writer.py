"""Group commit of events: concurrent requests share a transaction, counts stay exact.

Groups are built with `IngestWriter.held()` (nothing is taken until the block ends) and slow
writes are observed through events, so no test depends on how fast this machine runs.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from app.db import db, make_engine
from app.models import Event
from app.models.base import utcnow
from app.services.events import EventIn, track_events
from app.services.ingest_writer import EXTENSION, IngestUnavailable, IngestWriter, writer_for
from tests.conftest import wait_for

THREADS = 20
PER_THREAD = 25


@pytest.fixture
def new_writer():
    """Build writers bound to this test's database; their threads are stopped afterwards."""
    made: list[IngestWriter] = []

    def make(**kwargs) -> IngestWriter:
        made.append(IngestWriter(kwargs.pop("engine", None) or db.engine, **kwargs))
        return made[-1]

    yield make
    for writer in made:
        writer.stop()


def _event(message_id: str | None = None, user_id: str | None = "u1") -> EventIn:
    return EventIn(
        name="e",
        user_id=user_id,
        anonymous_id=None,
        properties={},
        timestamp=utcnow(),
        message_id=message_id,
    )


def _count(app, **where) -> int:
    with app.app_context():
        stmt = select(func.count()).select_from(Event).filter_by(**where)
        return db.session.scalar(stmt)


def _send_all(url: str, project, calls: list[tuple[str, dict]]) -> list[requests.Response]:
    """Send `calls` (path, body) from THREADS threads, one keep-alive connection each."""
    chunks = [calls[i::THREADS] for i in range(THREADS)]

    def run(chunk: list[tuple[str, dict]]) -> list[requests.Response]:
        with requests.Session() as http:
            http.headers.update(project.auth())
            return [http.post(url + path, json=body, timeout=30) for path, body in chunk]

    with ThreadPoolExecutor(THREADS) as pool:
        return [r for part in pool.map(run, chunks) for r in part]


def test_concurrent_single_events_are_all_committed_and_counted(app, project, live_server):
    calls = []
    for i in range(THREADS * PER_THREAD):
        body = {"userId": f"u{i % 7}", "messageId": f"m{i}"}
        if i % 3 == 0:
            calls.append(("/v1/events", {**body, "name": "e"}))
        elif i % 3 == 1:
            calls.append(("/v1/track", {**body, "event": "e"}))
        else:
            calls.append(("/v1/page", {**body, "name": "Home"}))
    writer = writer_for(app)
    with ThreadPoolExecutor(1) as background:
        # Hold the writers until two requests wait: they go as one group, whatever the timing.
        with writer.held():
            sending = background.submit(_send_all, live_server, project, calls)
            wait_for(lambda: writer.pending >= 2 or sending.done())
        responses = sending.result()
    assert all(r.status_code in (200, 202) for r in responses), {r.text for r in responses}
    assert all((r.json()["accepted"], r.json()["duplicates"]) == (1, 0) for r in responses)
    assert _count(app, project_id=project.id) == THREADS * PER_THREAD
    assert app.extensions[EXTENSION] is writer
    # Grouping happened: fewer commits than requests.
    assert writer.groups < THREADS * PER_THREAD


def test_duplicate_message_ids_across_concurrent_requests_count_once(app, project, live_server):
    ids = [f"dup{i}" for i in range(PER_THREAD)]
    calls = [("/v1/track", {"event": "e", "userId": "u", "messageId": m}) for m in ids * THREADS]
    # Events without a messageId are always stored.
    calls += [("/v1/events", {"name": "plain", "userId": "u"})] * THREADS
    random.Random(7).shuffle(calls)
    responses = _send_all(live_server, project, calls)
    assert all(r.status_code in (200, 202) for r in responses)
    assert sum(r.json()["accepted"] for r in responses) == PER_THREAD + THREADS
    assert sum(r.json()["duplicates"] for r in responses) == PER_THREAD * (THREADS - 1)
    assert _count(app, project_id=project.id) == PER_THREAD + THREADS
    assert _count(app, name="plain") == THREADS


def test_counts_in_one_group_are_per_request(app, project, new_writer):
    with app.app_context(), db.begin() as session:
        track_events(session, project_id=project.id, events=[_event("stored")])
    writer = new_writer()
    with writer.held():
        first = writer.submit(project_id=project.id, events=[_event("a"), _event("b"), _event("a")])
        second = writer.submit(
            project_id=project.id, events=[_event("b"), _event("stored"), _event(None)]
        )
    r1, r2 = first.result(10), second.result(10)
    assert writer.groups == 1
    assert (r1.accepted, r1.duplicates) == (2, 1)
    # b came earlier in the group, "stored" was in the database already.
    assert (r2.accepted, r2.duplicates) == (1, 2)
    assert _count(app, project_id=project.id) == 4


def test_a_failing_request_does_not_fail_its_group_or_later_ones(app, project, new_writer):
    writer = new_writer()
    with writer.held():  # the three go as one group
        good = writer.submit(project_id=project.id, events=[_event("g1")])
        # A project deleted while its request waited: the foreign key refuses its events.
        bad = writer.submit(project_id=project.id + 1000, events=[_event("x")])
        also_good = writer.submit(project_id=project.id, events=[_event("g2", user_id="u2")])
    assert good.result(10).accepted == 1
    assert also_good.result(10).accepted == 1
    with pytest.raises(IntegrityError):
        bad.result(10)
    later = writer.track(project_id=project.id, events=[_event("g3")])
    assert later.accepted == 1
    assert _count(app, project_id=project.id) == 3


def test_unreachable_database_is_a_503_and_later_requests_succeed(
    app, api, project, database_url, tmp_path, new_writer
):
    if database_url.startswith("sqlite"):
        down_url = f"sqlite:///{tmp_path}/missing-dir/cairn.db"
    else:
        down_url = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
    down = make_engine(down_url)
    try:
        app.extensions[EXTENSION] = new_writer(engine=down)
        r = api.post("/v1/track", json={"event": "e", "userId": "u", "messageId": "m1"})
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert r.json["message"] == "Database unavailable, retry later"
        r = api.post("/v1/events", json={"name": "e", "userId": "u", "messageId": "m1"})
        assert r.status_code == 503
        assert _count(app) == 0
    finally:
        app.extensions[EXTENSION].stop()
        down.dispose()
    del app.extensions[EXTENSION]  # the next request creates a writer for the real database
    r = api.post("/v1/track", json={"event": "e", "userId": "u", "messageId": "m1"})
    assert (r.status_code, r.json["accepted"]) == (200, 1)
    assert _count(app, project_id=project.id) == 1


def test_a_writer_that_does_not_answer_in_time_is_a_503(app, project, database_url, new_writer):
    slow = make_engine(database_url)
    connecting = threading.Event()
    release = threading.Event()

    def stall(*_) -> None:  # a database slow to accept connections
        connecting.set()
        release.wait(30)

    event.listen(slow, "connect", stall)
    try:
        writer = new_writer(engine=slow)
        slow_one = writer.submit(project_id=project.id, events=[_event("slow")])
        # The writer connects only after taking its group: the request is being written.
        assert connecting.wait(30)
        with pytest.raises(IngestUnavailable, match="retry later with the same messageIds"):
            writer.wait(slow_one, timeout=0.1)
        # Queued behind it, never taken: nothing is stored and the answer says so.
        queued = writer.submit(project_id=project.id, events=[_event("queued")])
        with pytest.raises(IngestUnavailable, match="nothing stored"):
            writer.wait(queued, timeout=0.1)
        release.set()
        # The group was already being written: it commits, and a retry is a duplicate.
        assert writer.track(project_id=project.id, events=[_event("slow")]).duplicates == 1
        assert _count(app, message_id="queued") == 0
    finally:
        release.set()
        writer.stop()
        slow.dispose()


def test_a_request_still_queued_when_its_wait_ends_is_not_stored(app, project, new_writer):
    writer = new_writer()
    with writer.held():
        waiting = writer.submit(project_id=project.id, events=[_event("late")])
        with pytest.raises(IngestUnavailable, match="nothing stored, retry later"):
            writer.wait(waiting, timeout=0.1)
    assert writer.track(project_id=project.id, events=[_event("after")]).accepted == 1
    assert _count(app, message_id="late") == 0
    assert _count(app, message_id="after") == 1


def test_writer_thread_exits_when_idle_and_restarts(app, project, new_writer):
    writer = new_writer(idle_seconds=0.05)
    assert writer.track(project_id=project.id, events=[_event("i1")]).accepted == 1
    wait_for(lambda: not writer.running)  # it lets go of itself once idle
    assert writer.track(project_id=project.id, events=[_event("i2")]).accepted == 1


def test_one_writer_per_app_and_process(app):
    with app.app_context():
        assert writer_for(app) is writer_for(app)
        writer_for(app).pid = -1  # as if inherited from a parent process across fork
        assert writer_for(app).pid != -1
