"""Faults against real brokers: a SIGKILLed worker mid fan-out, a broker outage under load.

`cairn serve` (API + sweeper) and `dramatiq workers.actors` run as real processes; the broker
is reached through a loopback TCP proxy so a test can take it down and bring it back. The kill
lands mid fan-out by construction, not by timing: a trigger (`SentGate`) lets the first messages
be recorded `sent` and then holds back every later one until the worker is dead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from sqlalchemy import Engine, create_engine, text

from tests.conftest import wait_for
from tests.e2e.live import Server, _cairn, fresh_pg_database
from tests.e2e.proxy import TcpProxy

# These tests flush the shared real brokers' queues: under pytest-xdist they run in one
# worker, with the other broker tests (tests/workers/test_broker.py).
pytestmark = pytest.mark.xdist_group("brokers")

BROKERS = [
    (name, os.environ.get(var))
    for name, var in (("redis", "TEST_REDIS_URL"), ("rabbitmq", "TEST_AMQP_URL"))
]


def _broker_params():
    return [
        pytest.param(url, id=name, marks=pytest.mark.skipif(not url, reason=f"{name} unset"))
        for name, url in BROKERS
    ]


@pytest.fixture
def fault_db(tmp_path):
    """A database of its own, shared by the test and its subprocesses."""
    pg = os.environ.get("TEST_DATABASE_URL")
    if not pg:
        yield f"sqlite:///{tmp_path / 'faults.db'}"
        return
    with fresh_pg_database("cairn_faults") as url:
        yield url


def _flush(broker_url: str) -> None:
    from workers.broker import build_broker

    broker = build_broker(broker_url)
    for queue in ("deliver", "fanout"):
        broker.declare_queue(queue)
    broker.flush_all()
    broker.close()


def _proxied(url: str, proxy: TcpProxy) -> str:
    parsed = urlparse(url)
    return parsed._replace(
        netloc=parsed.netloc.replace(f"{parsed.hostname}:{parsed.port}", f"127.0.0.1:{proxy.port}")
    ).geturl()


class Worker:
    """`dramatiq workers.actors` in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with log.open("a") as sink:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dramatiq",
                    "workers.actors",
                    "--processes",
                    "1",
                    "--threads",
                    "2",
                ],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT status, count(*) FROM messages GROUP BY status"))
            .tuples()
            .all()
        )


class SentGate:
    """Lets `limit` messages be recorded `sent`, then holds back every later one until opened
    (or, with `table` and `status`, the rows of another table reaching another status).

    PostgreSQL: a trigger waits on an advisory lock this object holds, so a worker stops inside
    its recording transaction. SQLite has no waiting in triggers: there the trigger refuses the
    update (the worker's job fails and is retried), which the worker's log shows.
    """

    KEY = 0x6661_756C_74  # "fault"; advisory locks are per database, this one is the test's

    def __init__(
        self,
        engine: Engine,
        limit: int,
        worker_log: Path,
        table: str = "messages",
        status: str = "sent",
    ) -> None:
        self.engine = engine
        self.worker_log = worker_log
        self.postgres = engine.dialect.name == "postgresql"
        if self.postgres:
            self._lock = engine.connect()
            self._lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.KEY})
            self._lock.commit()
            body = (
                f"BEGIN IF (SELECT count(*) FROM {table} WHERE status = '{status}') >= "
                f"{limit} THEN PERFORM pg_advisory_xact_lock_shared({self.KEY}); END IF; "
                "RETURN NEW; END"
            )
            ddl = [
                f"CREATE FUNCTION sent_gate() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$",
                f"CREATE TRIGGER sent_gate BEFORE UPDATE OF status ON {table} FOR EACH ROW"
                f" WHEN (NEW.status = '{status}' AND OLD.status <> '{status}')"
                " EXECUTE FUNCTION sent_gate()",
            ]
        else:
            ddl = [
                f"CREATE TRIGGER sent_gate BEFORE UPDATE OF status ON {table}"
                f" WHEN NEW.status = '{status}' AND OLD.status <> '{status}'"
                f" AND (SELECT count(*) FROM {table} WHERE status = '{status}') >= {limit}"
                " BEGIN SELECT RAISE(ABORT, 'sent gate closed'); END"
            ]
        with engine.begin() as conn:
            for statement in ddl:
                conn.execute(text(statement))

    def holding(self) -> bool:
        """True once a worker has reached the closed gate."""
        if self.postgres:
            with self.engine.connect() as conn:
                waiting = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND NOT granted AND objid = :k"
                    ),
                    {"k": self.KEY & 0xFFFFFFFF},
                ).scalar()
            return bool(waiting)
        return self.worker_log.exists() and "sent gate closed" in self.worker_log.read_text()

    def open(self) -> None:
        """Let everything through from now on (idempotent)."""
        if self.postgres:
            if not self._lock.closed:
                # Transactions of the dead worker waiting here go on, then end with it.
                self._lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
                self._lock.commit()
                self._lock.close()
                # A new body needs no lock on messages (dropping the trigger would).
                with self.engine.begin() as conn:
                    conn.execute(
                        text(
                            "CREATE OR REPLACE FUNCTION sent_gate() RETURNS trigger"
                            " LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
                        )
                    )
        else:
            with self.engine.begin() as conn:
                conn.execute(text("DROP TRIGGER IF EXISTS sent_gate"))


def _setup(tmp_path, fault_db, broker_url):
    _flush(broker_url)
    target = urlparse(broker_url)
    proxy = TcpProxy(target.hostname, target.port)
    proxy.start()
    env_extra = {
        "DATABASE_URL": fault_db,
        "BROKER_URL": _proxied(broker_url, proxy),
        "REQUEUE_AFTER_SECONDS": "3",
        "SENDING_LEASE_SECONDS": "6",
    }
    assert _cairn(tmp_path, "db", "upgrade", **env_extra).returncode == 0
    creds = json.loads(
        _cairn(tmp_path, "project", "create", "Faults", "--json", **env_extra)
        .stdout.strip()
        .splitlines()[-1]
    )
    server = Server(tmp_path, **env_extra)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(env_extra, INSTANCE_DIR=str(tmp_path / "instance"))
    return proxy, server, env, {"Authorization": f"Bearer {creds['secretKey']}"}


@pytest.mark.parametrize("broker_url", _broker_params())
def test_sigkilled_worker_mid_fan_out_loses_and_duplicates_nothing(tmp_path, fault_db, broker_url):
    proxy, server, env, auth = _setup(tmp_path, fault_db, broker_url)
    engine = create_engine(fault_db)
    workers: list[Worker] = []
    gate = SentGate(engine, 250, tmp_path / "worker.log")
    try:
        for start in range(0, 5000, 1000):
            r = requests.post(
                server.url + "/v1/users",
                headers=auth,
                timeout=60,
                json=[{"userId": f"u{i}"} for i in range(start, start + 1000)],
            )
            assert r.status_code == 200
        r = requests.post(
            server.url + "/v1/notify",
            headers=auth,
            timeout=30,
            json={"broadcast": True, "body": "hello", "channels": ["inapp"]},
        )
        assert r.status_code == 202, r.text
        workers.append(Worker(env, tmp_path / "worker.log"))
        # Kill it in the middle: some messages sent, the others held back at the gate.
        wait_for(lambda: _counts(engine).get("sent", 0) >= 250 and gate.holding(), timeout=120)
        workers[0].kill()
        killed_at = _counts(engine)
        assert 250 <= killed_at.get("sent", 0) < 5000, killed_at
        gate.open()
        workers.append(Worker(env, tmp_path / "worker.log"))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and _counts(engine).get("sent", 0) < 5000:
            time.sleep(0.5)
        with engine.connect() as conn:
            total, users = conn.execute(
                text("SELECT count(*), count(DISTINCT user_id) FROM messages")
            ).one()
            sent_twice = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT message_id FROM message_status_changes "
                    "WHERE status = 'sent' GROUP BY message_id HAVING count(*) > 1) AS d"
                )
            ).scalar()
        assert _counts(engine) == {"sent": 5000}, (killed_at, _counts(engine))
        assert (total, users, sent_twice) == (5000, 5000, 0)
    finally:
        gate.open()
        for w in workers:
            w.stop()
        server.stop()
        proxy.stop()
        engine.dispose()


@pytest.mark.parametrize("broker_url", _broker_params())
def test_broker_outage_delays_but_loses_nothing(tmp_path, fault_db, broker_url):
    proxy, server, env, auth = _setup(tmp_path, fault_db, broker_url)
    engine = create_engine(fault_db)
    worker = Worker(env, tmp_path / "worker.log")
    try:
        r = requests.post(
            server.url + "/v1/notify",
            headers=auth,
            timeout=30,
            json={"userIds": ["before"], "body": "x"},
        )
        assert r.status_code == 202
        deadline = time.monotonic() + 60
        while _counts(engine).get("sent", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _counts(engine) == {"sent": 1}
        proxy.stop()  # the broker is gone
        for n in range(20):
            r = requests.post(
                server.url + "/v1/notify",
                headers=auth,
                timeout=30,
                json={"userIds": [f"u{n}-{i}" for i in range(5)], "body": "x"},
            )
            assert r.status_code == 202, r.text  # rows committed, request succeeds
        assert _counts(engine).get("queued", 0) == 100
        proxy.start()  # back
        deadline = time.monotonic() + 120
        while _counts(engine).get("sent", 0) < 101 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _counts(engine) == {"sent": 101}
    finally:
        worker.stop()
        server.stop()
        proxy.stop()
        engine.dispose()


@pytest.mark.skipif(not os.environ.get("TEST_REDIS_URL"), reason="TEST_REDIS_URL unset")
def test_in_app_frames_cross_processes_through_redis(tmp_path, fault_db):
    """A worker process delivers; the API process streams it, via Redis pub/sub."""
    from app.services.projects import user_hash
    from tests.api.test_inbox import SseReader

    redis_url = os.environ["TEST_REDIS_URL"]
    proxy, server, env, auth = _setup(tmp_path, fault_db, redis_url)
    proxy.stop()
    server.stop()
    env["REDIS_URL"] = redis_url
    env["BROKER_URL"] = redis_url
    server = Server(tmp_path, DATABASE_URL=fault_db, BROKER_URL=redis_url, REDIS_URL=redis_url)
    worker = Worker(env, tmp_path / "worker.log")
    engine = create_engine(fault_db)
    try:
        with engine.connect() as conn:
            (secret,) = conn.execute(text("SELECT identity_secret FROM projects")).one()
        pk = json.loads(
            _cairn(
                tmp_path,
                "key",
                "create",
                "--project",
                "1",
                "--kind",
                "publishable",
                "--json",
                DATABASE_URL=fault_db,
            )
            .stdout.strip()
            .splitlines()[-1]
        )["key"]
        requests.post(server.url + "/v1/users", headers=auth, json={"userId": "ann"}, timeout=10)
        stream = SseReader(
            server.url + "/v1/inbox/stream",
            {"key": pk, "userId": "ann", "userHash": user_hash(secret, "ann")},
        )
        try:
            assert stream.events.get(timeout=20) == {"comment": "connected"}
            started = time.monotonic()
            r = requests.post(
                server.url + "/v1/notify",
                headers=auth,
                timeout=10,
                json={"userId": "ann", "title": "Hello", "body": "from a worker"},
            )
            message = stream.next_message(timeout=30)
            assert message["id"] == r.json()["messageIds"][0]
            assert message["body"] == "from a worker"
            assert time.monotonic() - started < 30
        finally:
            stream.close()
    finally:
        worker.stop()
        server.stop()
        engine.dispose()


def _journey_counts(engine) -> tuple[dict[str, int], list[tuple[int, str, int]]]:
    """Runs by status; (run, step, messages) for every journey send step that made any."""
    with engine.connect() as conn:
        runs = dict(
            conn.execute(text("SELECT status, count(*) FROM journey_runs GROUP BY status"))
            .tuples()
            .all()
        )
        per_step = (
            conn.execute(
                text(
                    "SELECT s.journey_run_id, s.journey_step, count(m.id) FROM sends s"
                    " JOIN messages m ON m.send_id = s.id WHERE s.journey_run_id IS NOT NULL"
                    " GROUP BY s.journey_run_id, s.journey_step"
                )
            )
            .tuples()
            .all()
        )
    return runs, list(per_step)


@pytest.mark.parametrize("broker_url", _broker_params())
def test_sigkilled_worker_mid_journey_loses_no_step_and_sends_nothing_twice(
    tmp_path, fault_db, broker_url
):
    """300 runs of `send, wait 2 s, send, exit`. The worker is SIGKILLed while the sweep
    advances woken runs: a gate on journey_runs holds (PostgreSQL: inside the sweep's
    transaction, that batch's second sends written but not committed) or refuses (SQLite)
    every run's exit after the 150th. A new worker finishes the rest: every run ends, each
    send step made exactly one message, none was recorded sent twice."""
    runs_wanted = 300
    proxy, server, env, auth = _setup(tmp_path, fault_db, broker_url)
    engine = create_engine(fault_db)
    workers: list[Worker] = []
    log = tmp_path / "worker.log"
    gate = SentGate(engine, runs_wanted // 2, log, table="journey_runs", status="exited")
    try:

        def post(path: str, body: object) -> dict:
            r = requests.post(server.url + path, headers=auth, timeout=60, json=body)
            assert r.status_code < 300, r.text
            return r.json()

        def send(step: str, then: str) -> dict:
            return {"id": step, "type": "send", "channel": "inapp", "template": "t", "next": then}

        post("/v1/templates", {"name": "t", "channels": {"inapp": {"en": {"body": "hi"}}}})
        journey = post(
            "/v1/journeys",
            {
                "name": "two sends",
                "trigger": {"event": "go"},
                "steps": [
                    send("first", "pause"),
                    {"id": "pause", "type": "wait", "duration": "2s", "next": "second"},
                    send("second", "end"),
                    {"id": "end", "type": "exit"},
                ],
            },
        )
        post(f"/v1/journeys/{journey['id']}/activate", {})
        post("/v1/events", [{"name": "go", "userId": f"j{i}"} for i in range(runs_wanted)])
        workers.append(Worker(env, log))
        wait_for(gate.holding, timeout=120)
        workers[0].kill()
        runs_at_kill, _ = _journey_counts(engine)
        sent_at_kill = _counts(engine)
        assert runs_at_kill.get("exited", 0) < runs_wanted, runs_at_kill  # mid-journey
        gate.open()
        workers.append(Worker(env, log))

        def finished():
            runs, _ = _journey_counts(engine)
            done = {"sent": 2 * runs_wanted}
            return runs == {"exited": runs_wanted} and _counts(engine) == done

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not finished():
            time.sleep(0.5)
        runs, per_step = _journey_counts(engine)
        with engine.connect() as conn:
            sent_twice = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT message_id FROM message_status_changes "
                    "WHERE status = 'sent' GROUP BY message_id HAVING count(*) > 1) AS d"
                )
            ).scalar()
            reasons = dict(
                conn.execute(
                    text("SELECT exit_reason, count(*) FROM journey_runs GROUP BY exit_reason")
                )
                .tuples()
                .all()
            )
        state = (runs_at_kill, sent_at_kill, runs, _counts(engine))
        assert runs == {"exited": runs_wanted}, state
        assert reasons == {'exit step "end"': runs_wanted}, reasons
        assert _counts(engine) == {"sent": 2 * runs_wanted}, state
        assert len(per_step) == 2 * runs_wanted and {n for *_, n in per_step} == {1}
        assert {step for _, step, _ in per_step} == {"first", "second"}
        assert sent_twice == 0
    finally:
        gate.open()
        for w in workers:
            w.stop()
        server.stop()
        proxy.stop()
        engine.dispose()
