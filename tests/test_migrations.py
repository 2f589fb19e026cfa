"""The Alembic migrations build exactly the schema the models describe, on every backend.

Every test database is made by the migrations (tests/conftest.py, tests/journeys/conftest.py),
so a model changed without its migration already fails somewhere; this names the difference.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.db import make_engine
from app.models import Base

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
