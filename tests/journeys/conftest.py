"""Databases for the filter agreement tests: SQLite always, PostgreSQL with TEST_DATABASE_URL.

PostgreSQL runs in a schema of its own (`filters_test`), created and dropped here, so these
tests never touch tables other suites keep in `public`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

# Importing the package registers every model's table on Base.metadata.
import app.models.audience  # noqa: F401
from app.models.base import Base

PG_SCHEMA = "filters_test"


def _sqlite_engine(path: Path) -> Engine:
    return create_engine(f"sqlite:///{path}")


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
    """An engine with every Cairn table created, on each database the suite can reach."""
    if request.param == "sqlite":
        engine = _sqlite_engine(tmp_path_factory.mktemp("filters") / "filters.db")
        Base.metadata.create_all(engine)
        yield engine
        engine.dispose()
        return
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set")
    with _postgres_engine(url) as engine:
        Base.metadata.create_all(engine)
        yield engine
