"""Live in-app across server processes: PostgreSQL without Redis carries every frame (NOTIFY)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from app.services.projects import user_hash
from tests.e2e.live import CAIRN, _cairn, _env, _free_port, fresh_pg_database
from tests.sse import SseReader

pytestmark = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"), reason="TEST_DATABASE_URL unset"
)

SERVERS = 4
USERS = 20
SENDS = 100
# Every LARGE_EVERY-th message is too large for a NOTIFY payload (8000 bytes).
LARGE_EVERY = 20
# One process per server, so the test knows which process holds each stream.
ONE = ("--workers", "1")


@pytest.fixture
def database_url() -> str:
    """A fresh PostgreSQL database for these servers, dropped afterwards."""
    with fresh_pg_database("cairn_sse") as url:
        yield url


class Servers:
    """`cairn serve --workers 1` processes on one database, started together."""

    def __init__(self, tmp_path: Path, count: int, **env: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.logs: list[Path] = []
        for _ in range(count):
            port = _free_port()
            log = tmp_path / f"serve-{port}.log"
            with log.open("w") as sink:
                self.procs.append(
                    subprocess.Popen(
                        [CAIRN, "serve", "--host", "127.0.0.1", "--port", str(port), *ONE],
                        env=_env(tmp_path, **env),
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            self.urls.append(f"http://127.0.0.1:{port}")
            self.logs.append(log)
        deadline = time.monotonic() + 120
        for proc, url, log in zip(self.procs, self.urls, self.logs, strict=True):
            while True:
                if proc.poll() is not None:
                    self.stop()
                    raise AssertionError("cairn serve exited:\n" + log.read_text())
                try:
                    if requests.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("cairn serve did not come up:\n" + log.read_text())
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM each process group, then SIGKILL what is left."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_every_in_app_frame_reaches_its_stream_on_another_process(tmp_path, database_url):
    env = {"DATABASE_URL": database_url}
    assert _cairn(tmp_path, "db", "upgrade", **env).returncode == 0
    created = _cairn(tmp_path, "project", "create", "Live", "--json", **env)
    assert created.returncode == 0, created.stderr
    creds = json.loads(created.stdout.strip().splitlines()[-1])
    auth = {"Authorization": f"Bearer {creds['secretKey']}"}
    servers = Servers(tmp_path, SERVERS, **env)
    streams: dict[str, SseReader] = {}
    try:
        users = [f"user{i}" for i in range(USERS)]
        r = requests.post(
            servers.urls[0] + "/v1/users",
            json=[{"userId": u} for u in users],
            headers=auth,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        # User i's stream is held by server i % SERVERS; its messages are posted to the next
        # server, whose in-process workers deliver them: every frame crosses processes.
        for i, user in enumerate(users):
            streams[user] = SseReader(
                servers.urls[i % SERVERS] + "/v1/inbox/stream",
                {
                    "key": creds["publishableKey"],
                    "userId": user,
                    "userHash": user_hash(creds["identitySecret"], user),
                },
            )
            assert streams[user].response.status_code == 200
        for stream in streams.values():
            stream.wait_connected()

        expected: dict[str, dict[int, str]] = {u: {} for u in users}
        sessions = [requests.Session() for _ in servers.urls]
        for n in range(SENDS):
            i = n % USERS
            sender = (i % SERVERS + 1) % SERVERS
            body = f"message {n} " + ("x" * 9000 if n % LARGE_EVERY == 0 else "")
            r = sessions[sender].post(
                servers.urls[sender] + "/v1/notify",
                json={"userId": users[i], "title": f"#{n}", "body": body},
                headers=auth,
                timeout=30,
            )
            assert r.status_code == 202, r.text
            expected[users[i]][r.json()["messageIds"][0]] = body

        received: dict[str, dict[int, str]] = {u: {} for u in users}
        deadline = time.monotonic() + 180
        while received != expected and time.monotonic() < deadline:
            for user, stream in streams.items():
                try:
                    while True:
                        event = stream.events.get(timeout=0.05)
                        if "data" in event:
                            received[user][int(event["id"])] = json.loads(event["data"])["body"]
                except queue.Empty:
                    pass
        missing = {u: sorted(set(expected[u]) - set(received[u])) for u in users}
        assert not any(missing.values()), f"frames never arrived: {missing}"
        assert received == expected  # each stream got its own messages, bodies intact
    finally:
        for stream in streams.values():
            stream.close()
        servers.stop()
