"""A live `cairn serve` for end-to-end tests: its own instance dir, a free port, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

CAIRN = str(Path(sys.executable).parent / "cairn")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "SECRET_KEY", "PORT")
    }
    env["INSTANCE_DIR"] = str(tmp_path / "instance")
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cairn(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAIRN, *args], env=_env(tmp_path, **env), capture_output=True, text=True, timeout=120
    )


class Server:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"serve-{self.port}.log"
        with self.log.open("w") as sink:
            self.proc = subprocess.Popen(
                [CAIRN, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=_env(tmp_path, **env),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("cairn serve exited:\n" + self.log.read_text())
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError("cairn serve did not come up:\n" + self.log.read_text())

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of this process next to TEST_DATABASE_URL's, dropped afterwards
    (named after the process, so two runs on one server never share it)."""
    import psycopg

    url = os.environ["TEST_DATABASE_URL"]
    base = url.replace("postgresql+psycopg://", "postgresql://")  # for psycopg itself
    name = f"{prefix}_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield url.rsplit("/", 1)[0] + "/" + name  # the SQLAlchemy URL, driver included
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
