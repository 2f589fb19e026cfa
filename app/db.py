"""Engine and session handling: one session per request, owned by the request teardown."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from flask import Flask, g
from sqlalchemy import (
    BigInteger,
    Engine,
    any_,
    create_engine,
    event,
    insert,
    literal,
    text,
)
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

_log = logging.getLogger(__name__)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the per-dialect settings Cairn relies on."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers proceed during writes; busy_timeout makes concurrent writers wait
            # instead of failing with "database is locked".
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
            # writes can hit SQLITE_BUSY on lock upgrade without the busy handler ever waiting.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    ping_idle = kwargs.pop("ping_idle_seconds", PING_IDLE_SECONDS)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    if kwargs.get("poolclass") is NullPool:
        kwargs.pop("pool_size")
        kwargs.pop("max_overflow")
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_idle)
    return engine


# A pooled PostgreSQL connection idle for longer than this is checked with a round trip before
# it is used (a database restart or an idle timeout closes such connections); one reused sooner
# is not. SQLAlchemy's pool_pre_ping checks on every checkout: a round trip per transaction, and
# a job makes several (~0.3 ms each here). A connection that broke within the window fails its
# transaction instead; SQLAlchemy then drops the whole pool, the job is retried and a request
# answers 503 (app.errors).
PING_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("checked_in")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or reused within the window
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as err:  # the pool replaces the connection
            raise DisconnectionError(f"pooled connection lost while idle: {err}") from err


class Database:
    """Flask extension holding the engine and the session factory."""

    def __init__(self, app: Flask | None = None) -> None:
        self.engine: Engine | None = None
        self.sessionmaker: sessionmaker[Session] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Create the engine from DATABASE_URL and close the request session on teardown."""
        self.engine = make_engine(app.config["DATABASE_URL"])
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        app.extensions["cairn_db"] = self

        @app.teardown_appcontext
        def _close_session(exc: BaseException | None) -> None:
            session: Session | None = g.pop("db_session", None)
            if session is not None:
                if exc is not None:
                    session.rollback()
                session.close()

    def commit_request(self) -> None:
        """Commit the request's session once, after the view returned without an error.

        Endpoints and services never commit: a request's writes land together or not at all,
        and a database error here is answered by the error handlers (503) like any other.
        """
        session: Session | None = g.get("db_session")
        if session is not None and (session.in_transaction() or session.new or session.dirty):
            session.commit()

    @property
    def session(self) -> Session:
        """The current request's session, created on first use."""
        session = g.get("db_session")
        if session is None:
            assert self.sessionmaker is not None
            session = self.sessionmaker()
            g.db_session = session
        return session

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """A session for code outside a request (CLI, jobs): commit on success."""
        assert self.sessionmaker is not None
        with self.sessionmaker() as session, session.begin():
            yield session

    @property
    def dialect(self) -> str:
        assert self.engine is not None
        return self.engine.dialect.name


db = Database()


def insert_ignore(session: Session, model: Any, index_elements: list[str]) -> Any:
    """`INSERT ... ON CONFLICT (index_elements) DO NOTHING` for the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model).on_conflict_do_nothing(index_elements=index_elements)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model).on_conflict_do_nothing(index_elements=index_elements)


def bulk_insert(
    session: Session,
    model: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str] | None = None,
    returning: Sequence[str] = (),
) -> list[Any]:
    """Insert `rows` (all with the same keys) in one statement; the `returning` rows.

    `conflict`: ON CONFLICT (these columns) DO NOTHING. On PostgreSQL the rows travel as one
    JSON document (`INSERT ... SELECT ... FROM json_to_recordset(:rows)`): a short statement
    psycopg parses once and one `json.dumps`, where a multi-row VALUES list is re-parsed on
    every execution (~3 ms for a hundred rows of a dozen columns in the event processor's
    profile) and array parameters are escaped element by element in Python. A JSON column's
    None is stored as SQL NULL here (SQLAlchemy's JSON type would store JSON null; both read
    back as None). Elsewhere, the dialect's executemany.
    """
    if not rows:
        return []
    names = list(rows[0])
    table = model.__table__
    session.flush()  # a textual statement does not autoflush: pending rows first, as the ORM's
    if session.get_bind().dialect.name != "postgresql":
        stmt = insert_ignore(session, model, list(conflict)) if conflict else insert(model)
        if returning:
            stmt = stmt.returning(*[table.c[n] for n in returning], sort_by_parameter_order=True)
            return list(session.execute(stmt, [dict(r) for r in rows]))
        session.execute(stmt, [dict(r) for r in rows])
        return []
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    quoted = [f'"{n}"' for n in names]
    columns = ", ".join(
        f"{q} {table.c[n].type.compile(dialect=dialect)}"
        for q, n in zip(quoted, names, strict=True)
    )
    sql = (
        f'INSERT INTO "{table.name}" ({", ".join(quoted)}) SELECT {", ".join(quoted)}'
        f" FROM json_to_recordset(CAST(:rows AS json)) AS x({columns})"
    )
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    payload = json.dumps([dict(r) for r in rows], default=_json_value, separators=(",", ":"))
    result = session.execute(text(sql), {"rows": payload})
    return list(result) if returning else []


def bulk_update_pg(
    session: Session,
    model: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str] = ("id",),
    where: str | None = None,
    keep_when: str | None = None,
    kept: Sequence[str] = (),
) -> None:
    """PostgreSQL: `UPDATE <table> SET ... FROM json_to_recordset(:rows) WHERE <keys match>`,
    the rows (same keys, the `keys` columns among them) as one JSON document, like
    `bulk_insert`: one short statement instead of an executemany of one UPDATE per row.

    `where`: a further SQL condition over the table's columns, qualified as `t.`. Columns in
    `kept` keep their current value where the SQL condition `keep_when` (likewise) holds.
    """
    if not rows:
        return
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    table = model.__table__
    names = list(rows[0])
    session.flush()  # as bulk_insert
    columns = ", ".join(f'"{n}" {table.c[n].type.compile(dialect=dialect)}' for n in names)
    sets = []
    for n in names:
        if n in keys:
            continue
        if n in kept and keep_when:
            sets.append(f'"{n}" = CASE WHEN {keep_when} THEN t."{n}" ELSE x."{n}" END')
        else:
            sets.append(f'"{n}" = x."{n}"')
    match = " AND ".join([*(f't."{k}" = x."{k}"' for k in keys), *([where] if where else [])])
    sql = (
        f'UPDATE "{table.name}" AS t SET {", ".join(sets)}'
        f" FROM json_to_recordset(CAST(:rows AS json)) AS x({columns}) WHERE {match}"
    )
    payload = json.dumps([dict(r) for r in rows], default=_json_value, separators=(",", ":"))
    session.execute(text(sql), {"rows": payload})


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # as UTCDateTime refuses them
            raise ValueError("naive datetime given to a UTC column")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value bulk_insert can send")


def ids_in(session: Session, column: Any, ids: Iterable[int]) -> Any:
    """`column IN (ids)` as one parameter on PostgreSQL (`= ANY(:ids)`, a bigint array).

    An expanded IN renders a placeholder per id: psycopg then parses the long statement text
    on every execution (too long for its cache), ~5 ms a statement of a few hundred ids in
    the event processor's profile. SQLite keeps the plain IN.
    """
    values = list(ids)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(literal(values, type_=ARRAY(BigInteger)))
    return column.in_(values)


def defer(session: Session, actor_name: str, *args: Any) -> None:
    """Send a job once this session's transaction commits; a rollback drops it.

    Jobs carry ids of committed rows. If the broker is unreachable at commit time, the row is
    still there and the sweeper enqueues it later, so a send failure is logged, not raised.
    """
    session.info.setdefault("deferred", []).append((actor_name, args))


# Actors whose one argument is a list of ids, with the most ids one job takes: the jobs one
# transaction deferred for them are merged into as few as that allows. A job's fixed cost (a
# delivery job: claim, load and record, ~30 ms on PostgreSQL here) then falls on many rows: an
# event processor group that started a campaign for each of 100 users defers one delivery job,
# not 100.
MERGED_ACTORS = {"deliver_messages": 250, "process_events": 500}


def _merged(jobs: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
    """The jobs, with those of `MERGED_ACTORS` merged per actor (ids in order, each once)."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    ids: dict[str, dict[int, None]] = {}
    for actor_name, args in jobs:
        if actor_name in MERGED_ACTORS and len(args) == 1 and isinstance(args[0], list):
            ids.setdefault(actor_name, {}).update(dict.fromkeys(args[0]))
        else:
            out.append((actor_name, args))
    for actor_name, merged in ids.items():
        batch, all_ids = MERGED_ACTORS[actor_name], list(merged)
        out += [
            (actor_name, (all_ids[start : start + batch],))
            for start in range(0, len(all_ids), batch)
        ]
    return out


@event.listens_for(Session, "after_commit")
def _send_deferred(session: Session) -> None:
    jobs = session.info.pop("deferred", None)
    if not jobs:
        return
    import dramatiq

    broker = dramatiq.get_broker()
    for actor_name, args in _merged(jobs):
        try:
            broker.get_actor(actor_name).send(*args)
        except Exception as err:  # broker down: the sweeper re-enqueues from the rows
            _log.warning("enqueue of %s failed (%s); the sweeper will retry", actor_name, err)


@event.listens_for(Session, "after_rollback")
def _drop_deferred(session: Session) -> None:
    session.info.pop("deferred", None)
