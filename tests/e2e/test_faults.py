"""Faults against real brokers: a SIGKILLed worker mid fan-out, a broker outage under load.

`cairn serve` (API + sweeper) and `dramatiq workers.actors` run as real processes; the broker
is reached through a loopback TCP proxy so a test can take it down and bring it back.
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
from sqlalchemy import create_engine, text

from tests.e2e.proxy import TcpProxy
from tests.e2e.test_cli_and_serve import CAIRN, Server, _cairn

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
    import psycopg

    base = pg.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cairn_faults WITH (FORCE)")
        conn.execute("CREATE DATABASE cairn_faults")
    yield pg.rsplit("/", 1)[0] + "/cairn_faults"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cairn_faults WITH (FORCE)")


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
        # Kill it in the middle: some messages sent, not all.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sent = _counts(engine).get("sent", 0)
            if sent >= 250:
                break
            time.sleep(0.01)
        workers[0].kill()
        killed_at = _counts(engine)
        assert killed_at.get("sent", 0) < 5000 or pytest.skip("finished before the kill")
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
    _ = CAIRN


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
