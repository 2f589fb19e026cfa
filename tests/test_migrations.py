"""The Alembic migrations build exactly the schema the models describe, on every backend.

Every test database is made by the migrations (tests/conftest.py, tests/journeys/conftest.py),
so a model changed without its migration already fails somewhere; this names the difference.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from app.db import make_engine
from app.migrate import alembic_config, upgrade
from app.models import Base
from tests.conftest import BACKENDS, PG_URL

# Created at run time by APScheduler's job store (workers/scheduler.py), not by a migration;
# it stays in the session's PostgreSQL database once a scheduler test has run.
RUNTIME_TABLES = {"apscheduler_jobs"}


def _made_on(dialect: str, item: Any) -> bool:
    """False for schema items the models create only on other dialects (`.ddl_if(dialect=)`)."""
    condition = getattr(item, "_ddl_if", None)
    if condition is None or condition.dialect is None:
        return True
    wanted = condition.dialect
    return dialect in ((wanted,) if isinstance(wanted, str) else tuple(wanted))


def test_the_migrated_schema_matches_the_models(database_url):
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            dialect = conn.dialect.name

            def include(item: Any, name: Any, type_: str, reflected: bool, compare_to: Any):
                if reflected:
                    return not (type_ == "table" and name in RUNTIME_TABLES)
                # A PostgreSQL-only index (GIN) is absent from SQLite by design, not by drift.
                return _made_on(dialect, item)

            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": include,
                },
            )
            drift = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert drift == [], "models and migrations disagree (add a migration):\n" + "\n".join(
        map(repr, drift)
    )


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database no migration has touched, on each configured backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    assert PG_URL is not None
    name = f"cairn_test_{os.getpid()}_migrations"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _causes(conn) -> list[str]:
    return list(conn.scalars(text("SELECT cause FROM audience_changes ORDER BY id")))


def test_0008_adds_the_journey_cause_keeping_the_history(empty_database):
    """CHECK constraints are not compared with the models above, so this holds the one
    0008 changes: `journey` is refused before it, accepted after, and a downgrade keeps the
    rows (a journey's moves become `rule`, as they were logged before)."""
    engine = make_engine(empty_database)
    at = "2026-01-01 00:00:00+00:00"
    change = (
        "INSERT INTO audience_changes (project_id, audience_id, user_id, kind, cause, at)"
        " VALUES (1, 1, 1, 'joined', :cause, :at)"
    )
    try:
        upgrade(engine, "0007")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO projects (id, name, identity_secret, settings, created_at)"
                    " VALUES (1, 'p', 's', '{}', :at)"
                ),
                {"at": at},
            )
            conn.execute(
                text(
                    "INSERT INTO users (id, project_id, attributes, created_at, updated_at)"
                    " VALUES (1, 1, '{}', :at, :at)"
                ),
                {"at": at},
            )
            conn.execute(
                text(
                    "INSERT INTO audiences (id, project_id, name, created_at)"
                    " VALUES (1, 1, 'vip', :at)"
                ),
                {"at": at},
            )
            conn.execute(text(change), {"cause": "api", "at": at})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(change), {"cause": "journey", "at": at})
        upgrade(engine, "0008")
        with engine.begin() as conn:
            conn.execute(text(change), {"cause": "journey", "at": at})
            assert _causes(conn) == ["api", "journey"]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(change), {"cause": "nobody", "at": at})
        command.downgrade(alembic_config(engine.url.render_as_string(hide_password=False)), "0007")
        with engine.connect() as conn:
            assert _causes(conn) == ["api", "rule"]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(change), {"cause": "journey", "at": at})
    finally:
        engine.dispose()
