"""Databases for the filter agreement tests: SQLite always, PostgreSQL with TEST_DATABASE_URL.

Both are built by the Alembic migrations, as every other test database is (tests/conftest.py),
so a model the migrations do not match fails here too. PostgreSQL runs in a schema of its own
(`filters_test_<pid>`), created and dropped here, so these tests never touch tables other suites
keep in `public`, and two runs on one server never share it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from app.migrate import upgrade

PG_SCHEMA = f"filters_test_{os.getpid()}"


@contextmanager
def _postgres_engine(url: str) -> Iterator[Engine]:
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    except Exception as error:  # set but unreachable: fail, do not skip (STYLE.md, Tests)
        admin.dispose()
        pytest.fail(f"TEST_DATABASE_URL is set but PostgreSQL is unreachable: {error}")
    # Every connection, the migration's included, resolves names in the schema of this run.
    engine = create_engine(url, connect_args={"options": f"-csearch_path={PG_SCHEMA}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filter_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """An engine on a migrated, empty Cairn schema, on each database the suite can reach."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("filters") / "filters.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        engine = create_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
        return
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set")
    with _postgres_engine(url) as engine:
        upgrade(engine)
        yield engine
