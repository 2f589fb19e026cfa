"""Shared fixtures: the app on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL too."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from app import create_app
from app.db import make_engine
from app.migrate import upgrade
from app.models import Base

PG_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("template") / "cairn.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> Iterator[str]:
    """A PostgreSQL database of this test session, created next to TEST_DATABASE_URL's.

    Each session gets its own database (named after the process), so two runs on one
    server cannot truncate each other's tables. A set TEST_DATABASE_URL that cannot be
    reached fails the run: it never skips.
    """
    assert PG_URL is not None
    name = f"cairn_test_{os.getpid()}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for one test, on each configured backend."""
    if request.param == "sqlite":
        path = tmp_path / "cairn.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_migrated")
        _truncate_pg(url)
        yield url


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    """The Flask app bound to this test's database."""
    application = create_app(
        {
            "DATABASE_URL": database_url,
            "INSTANCE_DIR": str(tmp_path / "instance"),
            "SECRET_KEY": "test-secret-key-0123456789",
            "TESTING": True,
            "ALLOW_PRIVATE_ENDPOINTS": True,
            # Streams notice a closed client at the next heartbeat: keep tests quick.
            "SSE_HEARTBEAT_SECONDS": 1,
        }
    )
    yield application
    from app.db import db

    if db.engine is not None:
        db.engine.dispose()


@pytest.fixture
def client(app):
    """A test client."""
    return app.test_client()


@dataclass
class ProjectKeys:
    """A project and its credentials, as `cairn project create` prints them."""

    id: int
    secret: str
    publishable: str
    access_key: str
    identity_secret: str

    def auth(self, kind: str = "secret") -> dict[str, str]:
        """Authorization header for the secret (default) or publishable key."""
        key = self.secret if kind == "secret" else self.publishable
        return {"Authorization": f"Bearer {key}"}


def make_project(app, name: str = "Acme", region: str | None = "US") -> ProjectKeys:
    """Create a project through the service, as the CLI does."""
    from app.db import db
    from app.services.projects import create_project

    with app.app_context(), db.begin() as session:
        project, sk, pk = create_project(session, name=name, default_region=region)
        return ProjectKeys(project.id, sk.key, pk.key, sk.access_key, project.identity_secret)


@pytest.fixture
def project(app) -> ProjectKeys:
    """A project with keys."""
    return make_project(app)


@pytest.fixture
def api(client, project):
    """Call the API with the project's secret key: api.post(path, json=...)."""

    class Api:
        def __getattr__(self, method: str):
            def call(
                path: str,
                kind: str = "secret",
                headers: dict[str, Any] | None = None,
                **kwargs: Any,
            ):
                merged = {**project.auth(kind), **(headers or {})}
                return getattr(client, method)(path, headers=merged, **kwargs)

            return call

    return Api()


@pytest.fixture
def live_server(app):
    """The app on a real socket (127.0.0.1, a free port), for real HTTP clients."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def user_events(app, user_id: str) -> list[str]:
    """The names of a user's events, in the order they were stored."""
    from sqlalchemy import select

    from app.db import db
    from app.models import Event, User

    with app.app_context():
        user = db.session.scalar(select(User).where(User.external_id == user_id))
        if user is None:
            return []
        return list(
            db.session.scalars(
                select(Event.name).where(Event.user_id == user.id).order_by(Event.id)
            )
        )


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until `predicate()` is truthy (returns it) or fail after a generous deadline.

    A poll that finds SQLite locked counts as "not yet": the app's SQLite transactions take
    the write lock up front (BEGIN IMMEDIATE), so a test's read competes with busy workers for
    it and can wait out the busy timeout on a loaded machine (the 10K-user split test did once).
    """
    import time

    from sqlalchemy.exc import OperationalError

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OperationalError as err:
            if "database is locked" not in str(err) or time.monotonic() > deadline:
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(interval)


@pytest.fixture
def workers(app):
    """In-process Dramatiq worker threads bound to this test's database (no scheduler)."""
    from workers.broker import broker
    from workers.embedded import start

    broker.flush_all()
    embedded = start(app, scheduler=False)
    yield embedded
    embedded.stop()
    broker.flush_all()


@pytest.fixture
def sweeper(app):
    """Run one sweep against this test's database, as the scheduler would."""
    from app.db import db
    from app.models.base import utcnow
    from workers.sweeper import sweep

    def run():
        with db.sessionmaker() as session:
            return sweep(session, utcnow(), dict(app.config))

    return run
