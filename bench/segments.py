"""Segment query benchmark: compiled filters (app.segment_sql) against hand-written SQL.

Run with `.venv/bin/python bench/segments.py` (PostgreSQL, 1M users / 5M events) or
`.venv/bin/python bench/segments.py --sqlite /tmp/cairn_segments.db` (100K users / 500K events).

It resets its own database (default `cairn_bench_segments`; never point it at data you keep),
migrates it with `app.migrate.upgrade`, makes sure the GIN index `ix_users_attributes_gin`
exists, loads one project of generated users and events (COPY on PostgreSQL, executemany on
SQLite; secondary indexes are built after the load), runs ANALYZE, then for each filter:

  count     `SELECT count(*) FROM users WHERE project_id = :p AND <clause>`
  iterate   `SELECT id ... ORDER BY id`, streamed in chunks (server-side cursor / yield_per)

for the compiled clause and for a hand-written clause selecting the same set (the counts are
checked equal), alternating the two, warm, median of a few runs; and the Python evaluator
(`journeys.filters.evaluate`) in µs per user over loaded profiles, checked against SQL on the
same users. Queries whose compiled/hand-written ratio exceeds the goal get EXPLAIN (ANALYZE,
BUFFERS) (EXPLAIN QUERY PLAN on SQLite) of both, printed and written to --explain-out.

The last line printed is one JSON object with every figure (`--json-out FILE` writes it too).
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
import psycopg  # noqa: E402
from harness import Deadline, conn_kwargs, emit, loadavg, log, reset_database  # noqa: E402
from sqlalchemy import (  # noqa: E402
    ClauseElement,
    Engine,
    Executable,
    and_,
    bindparam,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.ext.compiler import compiles  # noqa: E402

from app.db import make_engine  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models.base import UTCDateTime  # noqa: E402
from app.segment_sql import compile_filter, events, users  # noqa: E402
from journeys.filters import (  # noqa: E402
    EventFact,
    UserFacts,
    evaluate,
    parse_filter,
    required_event_names,
)
from workers.channels import reachability_clauses  # noqa: E402

DEFAULT_URL = os.environ.get(
    "BENCH_SEGMENTS_DATABASE_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/cairn_bench_segments",
)
GOAL_RATIO = 1.2
GOAL_SELECTIVE_COUNT_MS = 10.0
SELECTIVE = "b"
CHUNK = 10_000
GIN_INDEX = "ix_users_attributes_gin"
# --quick: a smoke run in seconds (the figures mean nothing).
QUICK = {"users": 2000, "events": 10_000, "runs": 2, "sample": 500}
GIN_DDL = f"CREATE INDEX IF NOT EXISTS {GIN_INDEX} ON users USING gin (attributes jsonb_path_ops)"


# --------------------------------------------------------------------------------------------
# The filters, and the hand-written SQL for the same sets


@dataclass
class Query:
    key: str
    label: str
    raw: Any
    # dialect -> WHERE clause over users (after `project_id = :pid AND`), params :since, :now
    hand: dict[str, str]
    in_goal: bool = True
    subset: int | None = None  # only users with id <= subset (for very slow compiled forms)


def _attr_pg(key: str) -> str:
    return f"attributes ->> '{key}'"


def _attr_lite(key: str) -> str:
    return f"json_extract(attributes, '$.\"{key}\"')"


PURCHASES_PG = (
    "id IN (SELECT e.user_id FROM events e WHERE e.project_id = :pid AND e.name = 'purchase'"
    " AND NOT e.erased AND e.timestamp >= :since AND e.timestamp <= :now"
    " GROUP BY e.user_id HAVING count(*) >= 2)"
)
PURCHASES_LITE = (
    "(SELECT count(*) FROM events e WHERE e.project_id = :pid AND e.user_id = users.id"
    " AND e.name = 'purchase' AND e.erased = 0 AND e.timestamp >= :since"
    " AND e.timestamp <= :now) >= 2"
)

QUERIES = [
    Query(
        "a",
        "string form, two attributes",
        "plan:pro,role:admin",
        {
            "postgresql": """attributes @> '{"plan": "pro", "role": "admin"}'""",
            "sqlite": f"{_attr_lite('plan')} = 'pro' AND {_attr_lite('role')} = 'admin'",
        },
    ),
    Query(
        "b",
        "object form, selective tenant_id",
        {"tenant_id": "acme-corp-123"},
        {
            "postgresql": """attributes @> '{"tenant_id": "acme-corp-123"}'""",
            "sqlite": f"{_attr_lite('tenant_id')} = 'acme-corp-123'",
        },
    ),
    Query(
        "c",
        "tree: any(plan) + numeric between",
        {
            "all": [
                {
                    "any": [
                        {"attr": "plan", "op": "eq", "value": "pro"},
                        {"attr": "plan", "op": "eq", "value": "enterprise"},
                    ]
                },
                {"attr": "score", "op": "between", "value": [100, 300]},
            ]
        },
        {
            # Every score in the data is an integer (or absent), so the plain cast is safe here.
            "postgresql": f"{_attr_pg('plan')} IN ('pro', 'enterprise')"
            f" AND ({_attr_pg('score')})::int BETWEEN 100 AND 300",
            "sqlite": f"{_attr_lite('plan')} IN ('pro', 'enterprise')"
            f" AND {_attr_lite('score')} BETWEEN 100 AND 300",
        },
    ),
    Query(
        "d",
        "tree: plan + purchase >= 2 in 30d",
        {
            "all": [
                {"attr": "plan", "op": "eq", "value": "pro"},
                {"event": "purchase", "op": "performed", "count": {"gte": 2}, "within": "30d"},
            ]
        },
        {
            "postgresql": f"""attributes @> '{{"plan": "pro"}}' AND {PURCHASES_PG}""",
            "sqlite": f"{_attr_lite('plan')} = 'pro' AND {PURCHASES_LITE}",
        },
    ),
    Query(
        "e",
        "extra: ISO date after (id<=20K)",
        {"attr": "signup_date", "op": "after", "value": "2026-06-30"},
        {
            # signup_date is always a plain YYYY-MM-DD string in the data: text order is time
            # order, and "after 2026-06-30" (midnight) is any later day.
            "postgresql": f"{_attr_pg('signup_date')} > '2026-06-30'",
            "sqlite": f"{_attr_lite('signup_date')} > '2026-06-30'",
        },
        in_goal=False,
        subset=20_000,
    ),
]


# --------------------------------------------------------------------------------------------
# Data generation


PLANS = (("free", 0.70), ("pro", 0.92), ("enterprise", 1.0))
ROLES = (("member", 0.75), ("viewer", 0.90), ("admin", 1.0))
REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "ap-northeast", "sa-east")
LANGUAGES = ("en", "en", "en", "de", "fr", "es", "pt-BR", "ja")
TIMEZONES = ("America/New_York", "Europe/Berlin", "Europe/Paris", "Asia/Tokyo", "UTC")
EVENT_NAMES = (
    ("page_view", 0.45),
    ("login", 0.65),
    ("email_open", 0.77),
    ("add_to_cart", 0.87),
    ("purchase", 0.95),
    ("signup", 0.98),
    ("logout", 1.0),
)
_ADJ = [
    "Blue",
    "Red",
    "Green",
    "Silver",
    "Golden",
    "Northern",
    "Southern",
    "Eastern",
    "Western",
    "Bright",
    "Quiet",
    "Rapid",
    "Solid",
    "Prime",
    "Grand",
    "Little",
    "Big",
    "Old",
    "New",
    "Royal",
    "Urban",
    "Coastal",
    "Mountain",
    "Summit",
    "Pioneer",
    "Atlas",
    "Nova",
    "Vivid",
    "Clever",
    "Honest",
]
_NOUN = [
    "River",
    "Stone",
    "Oak",
    "Pine",
    "Harbor",
    "Bridge",
    "Valley",
    "Forest",
    "Falcon",
    "Lion",
    "Tiger",
    "Bear",
    "Wolf",
    "Eagle",
    "Cedar",
    "Maple",
    "Anchor",
    "Beacon",
    "Canyon",
    "Delta",
    "Ember",
    "Frontier",
    "Glacier",
    "Horizon",
    "Island",
    "Jungle",
    "Lantern",
    "Meadow",
    "Orbit",
    "Prairie",
]
_SUFFIX = ("Labs", "Inc", "Group", "Partners", "Systems", "Co")
_TENANT_A = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "vandelay",
    "gringotts",
    "oscorp",
    "dunder",
    "aperture",
]
_TENANT_B = ["corp", "inc", "labs", "io", "group", "hq"]


def company_names(n: int = 5000) -> list[str]:
    names = [f"{a} {b} {s}" for s in _SUFFIX for a in _ADJ for b in _NOUN]
    return names[:n]


def tenant_ids(n: int = 20_000) -> list[str]:
    out = [
        f"{_TENANT_A[i % len(_TENANT_A)]}-{_TENANT_B[(i // len(_TENANT_A)) % len(_TENANT_B)]}-{i}"
        for i in range(n)
    ]
    out[123] = "acme-corp-123"
    return out


def _pick(table: tuple[tuple[str, float], ...], r: float) -> str:
    for name, upper in table:
        if r < upper:
            return name
    return table[-1][0]


class Timestamps:
    """Text of epoch seconds in the loader's format (strftime once per day, cached)."""

    def __init__(self, dialect: str) -> None:
        self.suffix = "+00" if dialect == "postgresql" else ".000000"
        self.days: dict[int, str] = {}

    def day(self, ts: int) -> str:
        day = ts // 86_400
        text = self.days.get(day)
        if text is None:
            text = self.days[day] = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
        return text

    def __call__(self, ts: int) -> str:
        second = ts % 86_400
        return (
            f"{self.day(ts)} {second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
            f"{self.suffix}"
        )


USER_COLUMNS = (
    "id, project_id, external_id, email, phone, language, timezone, attributes,"
    " created_at, updated_at, last_seen_at"
)
EVENT_COLUMNS = (
    "project_id, user_id, name, properties, message_id, source, timestamp, received_at,"
    " processed_at, erased"
)


def user_rows(
    n: int, project_id: int, now_s: int, dialect: str, seed: int
) -> Iterator[tuple[Any, ...]]:
    """(id, project_id, external_id, email, phone, language, timezone, attributes JSON,
    created_at, updated_at, last_seen_at) with ids 1..n; None = NULL."""
    rnd = random.Random(seed)
    r = rnd.random

    def randrange(k: int) -> int:
        return int(r() * k)

    fmt = Timestamps(dialect)
    companies, tenants = company_names(), tenant_ids()
    nc, nt = len(companies), len(tenants)
    two_years = 730 * 86_400
    dumps = json.dumps
    for uid in range(1, n + 1):
        created = now_s - randrange(two_years)
        attrs: dict[str, Any] = {"plan": _pick(PLANS, r())}
        if r() >= 0.05:
            attrs["role"] = _pick(ROLES, r())
        if r() >= 0.15:
            attrs["company"] = companies[randrange(nc)]
        if r() >= 0.20:
            attrs["region"] = REGIONS[randrange(7)]
        if r() >= 0.02:
            attrs["tenant_id"] = tenants[randrange(nt)]
        if r() >= 0.10:
            attrs["score"] = randrange(1001)
        if attrs["plan"] != "free":
            attrs["seats"] = 1 + randrange(200)
        if r() < 0.1:
            attrs["beta"] = True
        attrs["signup_date"] = fmt.day(created)
        created_text = fmt(created)
        seen = now_s - randrange(90 * 86_400) if r() < 0.8 else None
        yield (
            uid,
            project_id,
            f"user-{uid:08d}",
            f"user{uid}@example{uid % 50}.com" if r() >= 0.1 else None,
            f"+1555{uid:07d}" if r() < 0.4 else None,
            LANGUAGES[randrange(8)],
            TIMEZONES[randrange(5)],
            dumps(attrs),
            created_text,
            created_text,
            fmt(seen) if seen is not None else None,
        )


def _permuter(n: int) -> Callable[[int], int]:
    for prime in (7919, 104_729, 1_299_709):
        if n % prime:
            return lambda x: (x * prime + 13) % n + 1
    return lambda x: x + 1


def event_rows(
    n: int, n_users: int, project_id: int, now_s: int, dialect: str, seed: int
) -> Iterator[tuple[Any, ...]]:
    """Events in time order over the last 90 days, users skewed (a few very active ones)."""
    rnd = random.Random(seed)
    r = rnd.random

    def randrange(low: int, high: int | None = None) -> int:
        return int(r() * low) if high is None else low + int(r() * (high - low))

    fmt = Timestamps(dialect)
    perm = _permuter(n_users)
    span = 90 * 86_400
    start = now_s - span
    erased = "f" if dialect == "postgresql" else 0
    paths = [f"/p/{i}" for i in range(500)]
    for i in range(n):
        ts = min(now_s, start + (i * span) // n + randrange(60))
        user = perm(int(n_users * r() ** 1.5))
        name = _pick(EVENT_NAMES, r())
        if name == "purchase":
            props = (
                f'{{"amount": {randrange(100, 50_000) / 100}, "sku": "SKU-{randrange(3000):04d}",'
                ' "currency": "USD"}'
            )
        elif name == "add_to_cart":
            props = f'{{"sku": "SKU-{randrange(3000):04d}", "quantity": {1 + randrange(5)}}}'
        elif name == "page_view":
            props = f'{{"path": "{paths[randrange(500)]}"}}'
        else:
            props = "{}"
        stamp = fmt(ts)
        yield (project_id, user, name, props, None, "api", stamp, stamp, None, erased)


# --------------------------------------------------------------------------------------------
# Database setup


def _copy_lines(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[str]:
    """COPY text format; the generated values hold no tab, newline or backslash."""
    batch: list[str] = []
    for row in rows:
        batch.append("\t".join("\\N" if v is None else str(v) for v in row))
        if len(batch) >= size:
            yield "\n".join(batch) + "\n"
            batch = []
    if batch:
        yield "\n".join(batch) + "\n"


def load_postgres(url: str, n_users: int, n_events: int, now_s: int, seed: int) -> dict[str, Any]:
    kw = conn_kwargs(url)
    out: dict[str, Any] = {}
    with psycopg.connect(**kw, autocommit=True) as conn:
        has_gin = conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", (GIN_INDEX,))
        out["gin_from_migration"] = has_gin.fetchone() is not None
        pid = conn.execute(
            "INSERT INTO projects (name, identity_secret, settings, created_at)"
            " VALUES ('bench', 'secret', '{}', now()) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        # Secondary indexes are built after the load (much faster than maintaining them row
        # by row); constraint indexes (pk, unique) stay.
        rows = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public'"
            " AND i.tablename IN ('users', 'events') AND NOT EXISTS (SELECT 1 FROM"
            " pg_constraint c WHERE c.conname = i.indexname)"
        ).fetchall()
        defs = {name: ddl for name, ddl in rows}
        if GIN_INDEX not in defs:
            defs[GIN_INDEX] = GIN_DDL
        for name in defs:
            conn.execute(f'DROP INDEX IF EXISTS "{name}"')
        conn.execute("SET session_replication_role = replica")  # no FK triggers during the load
        conn.execute("SET synchronous_commit = off")
        for table, columns, rows_iter, count in (
            ("users", USER_COLUMNS, user_rows(n_users, pid, now_s, "postgresql", seed), n_users),
            (
                "events",
                EVENT_COLUMNS,
                event_rows(n_events, n_users, pid, now_s, "postgresql", seed + 1),
                n_events,
            ),
        ):
            t0 = time.perf_counter()
            sql = f"COPY {table} ({columns}) FROM STDIN"
            with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as copy:
                for chunk in _copy_lines(rows_iter, 20_000):
                    copy.write(chunk)
            dt = time.perf_counter() - t0
            out[f"{table}_load_s"] = round(dt, 1)
            out[f"{table}_rows_per_s"] = round(count / dt)
            log(f"COPY {count:,} {table}: {dt:.1f}s ({count / dt:,.0f} rows/s)")
        conn.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), %s)", (n_users,))
        conn.execute("SET maintenance_work_mem = '512MB'")
        t0 = time.perf_counter()
        for name, ddl in defs.items():
            t1 = time.perf_counter()
            conn.execute(ddl)
            log(f"  built {name} in {time.perf_counter() - t1:.1f}s")
        out["index_build_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        conn.execute("ANALYZE users")
        conn.execute("ANALYZE events")
        out["analyze_s"] = round(time.perf_counter() - t0, 1)
        log(f"ANALYZE users, events: {out['analyze_s']}s")
        sizes = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('users')),"
            " pg_size_pretty(pg_total_relation_size('events')),"
            " pg_size_pretty(pg_relation_size(%s))",
            (GIN_INDEX,),
        ).fetchone()
        out["sizes"] = {"users": sizes[0], "events": sizes[1], "gin": sizes[2]}  # type: ignore[index]
    out["project_id"] = pid
    return out


def load_sqlite(path: str, n_users: int, n_events: int, now_s: int, seed: int) -> dict[str, Any]:
    import sqlite3

    out: dict[str, Any] = {}
    conn = sqlite3.connect(path, isolation_level=None)
    cur = conn.cursor()
    cur.execute(
        "INSERT INTO projects (name, identity_secret, settings, created_at)"
        " VALUES ('bench', 'secret', '{}', '2026-01-01 00:00:00.000000')"
    )
    pid = cur.lastrowid
    rows = cur.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        " AND tbl_name IN ('users', 'events')"
    ).fetchall()
    for name, _sql in rows:
        cur.execute(f'DROP INDEX "{name}"')
    cur.execute("PRAGMA foreign_keys = OFF")
    cur.execute("PRAGMA synchronous = OFF")
    for table, columns, rows_iter, count in (
        ("users", USER_COLUMNS, user_rows(n_users, pid, now_s, "sqlite", seed), n_users),
        (
            "events",
            EVENT_COLUMNS,
            event_rows(n_events, n_users, pid, now_s, "sqlite", seed + 1),
            n_events,
        ),
    ):
        marks = ", ".join("?" * len(columns.split(",")))
        t0 = time.perf_counter()
        cur.execute("BEGIN")
        batch: list[tuple[Any, ...]] = []
        for row in rows_iter:
            batch.append(row)
            if len(batch) >= 20_000:
                cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", batch)
                batch = []
        if batch:
            cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", batch)
        cur.execute("COMMIT")
        dt = time.perf_counter() - t0
        out[f"{table}_load_s"] = round(dt, 1)
        out[f"{table}_rows_per_s"] = round(count / dt)
        log(f"executemany {count:,} {table}: {dt:.1f}s ({count / dt:,.0f} rows/s)")
    t0 = time.perf_counter()
    for _name, sql in rows:
        cur.execute(sql)
    out["index_build_s"] = round(time.perf_counter() - t0, 1)
    cur.execute("ANALYZE")
    conn.close()
    out["project_id"] = pid
    out["sizes"] = {"file": f"{os.path.getsize(path) / 2**20:.0f} MB"}
    return out


# --------------------------------------------------------------------------------------------
# Measuring


class Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: Any, dialect: str) -> None:
        self.statement = statement
        self.prefix = (
            "EXPLAIN (ANALYZE, BUFFERS) " if dialect == "postgresql" else "EXPLAIN QUERY PLAN "
        )


@compiles(Explain)
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return element.prefix + compiler.process(element.statement, **kw)


@dataclass
class Side:
    """One way of writing a query (compiled or hand-written)."""

    count: Any
    ids: Any
    page: Any
    params: dict[str, Any]
    count_ms: list[float] = field(default_factory=list)
    iter_ms: list[float] = field(default_factory=list)
    rows: int | None = None
    iterated: int | None = None
    error: str | None = None


def med(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def least(values: list[float]) -> float | None:
    return round(min(values), 2) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    """compiled / hand-written, to two decimals."""
    return harness.ratio(a, b, digits=2)


def run_count(engine: Engine, side: Side) -> float:
    with engine.connect() as conn:
        t0 = time.perf_counter()
        value = conn.execute(side.count, side.params).scalar_one()
        dt = (time.perf_counter() - t0) * 1000
    if side.rows is not None and side.rows != value:
        raise RuntimeError(f"count changed between runs: {side.rows} then {value}")
    side.rows = value
    return dt


def run_iter(engine: Engine, side: Side) -> float:
    """Every member id, CHUNK at a time, through one server-side cursor (stream_results)."""
    n = 0
    with engine.connect() as conn:
        t0 = time.perf_counter()
        result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(
            side.ids, side.params
        )
        for part in result.partitions():
            n += len(part)
        result.close()
        dt = (time.perf_counter() - t0) * 1000
    side.iterated = n
    return dt


def run_keyset(engine: Engine, side: Side) -> float:
    """Every member id by keyset pages: `... AND id > :after ORDER BY id LIMIT CHUNK`."""
    n = 0
    after = 0
    with engine.connect() as conn:
        t0 = time.perf_counter()
        while True:
            page = conn.execute(side.page, {**side.params, "after": after}).scalars().all()
            n += len(page)
            if len(page) < CHUNK:
                break
            after = page[-1]
        dt = (time.perf_counter() - t0) * 1000
    side.iterated = n
    return dt


def measure(
    engine: Engine,
    sides: tuple[Side, Side],
    runner: Callable[[Engine, Side], float],
    sink: str,
    deadline: Deadline,
    max_runs: int,
) -> None:
    """Warm-up run of each, then alternate compiled / hand-written for up to max_runs each."""
    warm = []
    for side in sides:
        try:
            warm.append(runner(engine, side))
        except Exception as exc:
            side.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            warm.append(float("inf"))
    slowest = max(warm)
    runs = 21 if slowest < 20 else max_runs if slowest < 500 else 3 if slowest < 4000 else 1
    for _ in range(runs):
        for side in sides:
            if side.error is not None:
                continue
            if deadline.left() < 60 and getattr(side, sink):
                return
            try:
                getattr(side, sink).append(runner(engine, side))
            except Exception as exc:
                side.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def explain(engine: Engine, stmt: Any, params: dict[str, Any], dialect: str) -> str:
    with engine.connect() as conn:
        rows = conn.execute(Explain(stmt, dialect), params).fetchall()
    if dialect == "postgresql":
        return "\n".join(r[0] for r in rows)
    return "\n".join(f"{r[0]:>3} {r[1]:>3} {r[-1]}" for r in rows)


def sql_text(engine: Engine, stmt: Any, params: dict[str, Any]) -> str:
    """The statement with its values inlined where SQLAlchemy can render them."""
    if params:
        stmt = stmt.params(**params)
    try:
        return str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    except Exception:
        return f"{stmt.compile(engine)}  -- {params}"


def evaluator_bench(
    engine: Engine, pid: int, now: datetime, conds: dict[str, Any], sample: int
) -> dict[str, dict[str, Any]]:
    """µs per user of evaluate() over the first `sample` profiles, and agreement with SQL."""
    names = sorted(set().union(*(required_event_names(c) for c in conds.values())))
    with engine.connect() as conn:
        t0 = time.perf_counter()
        profiles = conn.execute(
            select(
                users.c.id,
                users.c.external_id,
                users.c.email,
                users.c.phone,
                users.c.language,
                users.c.timezone,
                users.c.created_at,
                users.c.last_seen_at,
                users.c.attributes,
            )
            .where(users.c.project_id == pid, users.c.id <= sample)
            .order_by(users.c.id)
        ).all()
        history: dict[int, list[EventFact]] = {}
        if names:
            for uid, name, ts, props in conn.execute(
                select(
                    events.c.user_id, events.c.name, events.c.timestamp, events.c.properties
                ).where(
                    events.c.project_id == pid,
                    events.c.user_id <= sample,
                    events.c.name.in_(names),
                    events.c.erased.is_(False),
                )
            ):
                history.setdefault(uid, []).append(
                    EventFact(name=name, timestamp=ts, properties=props)
                )
        load_s = time.perf_counter() - t0
        facts = [
            UserFacts(
                now=now,
                user_id=p.external_id,
                email=p.email,
                phone=p.phone,
                language=p.language,
                timezone=p.timezone,
                created_at=p.created_at,
                last_seen_at=p.last_seen_at,
                attributes=p.attributes,
                events=tuple(history.get(p.id, ())),
            )
            for p in profiles
        ]
        out: dict[str, dict[str, Any]] = {}
        for key, cond in conds.items():
            evaluate(cond, facts[0])
            gc.disable()
            t0 = time.perf_counter()
            matched = sum(1 for f in facts if evaluate(cond, f))
            dt = time.perf_counter() - t0
            gc.enable()
            clause = compile_filter(
                cond,
                project_id=pid,
                dialect_name=engine.dialect.name,
                now=now,
                channel_clauses=reachability_clauses(),
            )
            in_sql = conn.execute(
                select(func.count())
                .select_from(users)
                .where(users.c.project_id == pid, users.c.id <= sample, clause)
            ).scalar_one()
            out[key] = {
                "us_per_user": round(dt / len(facts) * 1e6, 2),
                "matched": matched,
                "sql_matched": in_sql,
                "agree": matched == in_sql,
            }
    out["_load"] = {
        "profiles": len(facts),
        "events": sum(len(h) for h in history.values()),
        "load_ms": round(load_s * 1000),
    }
    return out


# --------------------------------------------------------------------------------------------
# Main


def main() -> int:
    ap = harness.parser(__doc__, DEFAULT_URL, 470.0)
    ap.add_argument("--sqlite", metavar="PATH", help="run on a SQLite file (recreated) instead")
    ap.add_argument("--users", type=int, help="default 1,000,000 (PG) / 100,000 (SQLite)")
    ap.add_argument("--events", type=int, help="default 5,000,000 (PG) / 500,000 (SQLite)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per measurement (max)")
    ap.add_argument("--sample", type=int, default=10_000, help="profiles for the evaluator")
    ap.add_argument("--statement-timeout", type=float, default=60.0, help="seconds (PG)")
    ap.add_argument("--skip-load", action="store_true", help="reuse the data of a previous run")
    ap.add_argument(
        "--iterate",
        choices=("cursor", "keyset"),
        default="cursor",
        help="server-side cursor (default) or keyset pages of --chunk ids",
    )
    ap.add_argument(
        "--cursor-tuple-fraction",
        type=float,
        default=1.0,
        help="PG planner setting for the cursor (PG default 0.1 = fast-start plans;"
        " we read every row, so 1.0)",
    )
    ap.add_argument("--explain", choices=("slow", "all", "none"), default="slow")
    ap.add_argument("--explain-out", help="default /tmp/cairn_segments_explain_<dialect>.txt")
    args = harness.parse(ap, None, QUICK)

    deadline = Deadline(args.max_seconds)
    dialect = "sqlite" if args.sqlite else "postgresql"
    n_users = args.users or (100_000 if args.sqlite else 1_000_000)
    n_events = args.events if args.events is not None else n_users * 5
    # Whole seconds so both loaders spell the same instants; `now` is the data's "present".
    now = datetime.now(UTC).replace(microsecond=0)
    now_s = int(now.timestamp())
    load_start = loadavg()
    log(f"{dialect}: {n_users:,} users, {n_events:,} events; load average {load_start}")

    setup: dict[str, Any] = {}
    if args.sqlite:
        url = f"sqlite:///{args.sqlite}"
        if not args.skip_load:
            for suffix in ("", "-wal", "-shm"):
                Path(args.sqlite + suffix).unlink(missing_ok=True)
    else:
        url = args.database_url
        if not args.skip_load:
            reset_database(url)

    t_setup = time.perf_counter()
    if not args.skip_load:
        mig_engine = make_engine(url) if args.sqlite else create_engine(url)
        upgrade(mig_engine)
        mig_engine.dispose()
        log("migrated to head")
        if args.sqlite:
            setup = load_sqlite(args.sqlite, n_users, n_events, now_s, args.seed)
        else:
            setup = load_postgres(url, n_users, n_events, now_s, args.seed)
            if not setup["gin_from_migration"]:
                log(f"note: {GIN_INDEX} was not created by the migrations; created it here")
    if args.sqlite:
        engine = make_engine(url)
    else:
        timeout_ms = int(args.statement_timeout * 1000)
        engine = create_engine(
            url,
            pool_size=2,
            # No server-side prepared statements: every run is planned with its own values.
            connect_args={
                "prepare_threshold": None,
                "options": f"-c statement_timeout={timeout_ms}"
                f" -c cursor_tuple_fraction={args.cursor_tuple_fraction}",
            },
        )
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT min(id) FROM projects")).scalar_one()
        n_users = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
        n_events = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
        if args.skip_load:
            last = conn.execute(select(func.max(events.c.timestamp))).scalar_one()
            now = last.replace(microsecond=0) + timedelta(seconds=60)
    setup["setup_s"] = round(time.perf_counter() - t_setup, 1)
    log(f"setup done in {setup['setup_s']}s; load average {loadavg()}")

    results: dict[str, Any] = {}
    conds = {q.key: parse_filter(q.raw) for q in QUERIES}
    since = now - timedelta(days=30)
    for q in QUERIES:
        if deadline.left() < 45:
            log(f"({q.key}) skipped: out of time")
            continue
        clause = and_(
            users.c.project_id == pid,
            compile_filter(
                conds[q.key],
                project_id=pid,
                dialect_name=dialect,
                now=now,
                channel_clauses=reachability_clauses(),
            ),
        )
        where = f"project_id = :pid AND ({q.hand[dialect]})"
        if q.subset:
            clause = and_(users.c.id <= q.subset, clause)
            where = f"id <= {q.subset} AND {where}"
        compiled = Side(
            select(func.count()).select_from(users).where(clause),
            select(users.c.id).where(clause).order_by(users.c.id),
            select(users.c.id)
            .where(clause, users.c.id > bindparam("after"))
            .order_by(users.c.id)
            .limit(CHUNK),
            {},
        )
        count_sql = text(f"SELECT count(*) FROM users WHERE {where}")
        ids_sql = text(f"SELECT id FROM users WHERE {where} ORDER BY id")
        page_sql = text(
            f"SELECT id FROM users WHERE {where} AND id > :after ORDER BY id LIMIT {CHUNK}"
        )
        params: dict[str, Any] = {"pid": pid}
        if ":since" in where:
            binds = [bindparam("since", type_=UTCDateTime), bindparam("now", type_=UTCDateTime)]
            count_sql, ids_sql = count_sql.bindparams(*binds), ids_sql.bindparams(*binds)
            page_sql = page_sql.bindparams(*binds)
            params.update(since=since, now=now)
        hand = Side(count_sql, ids_sql, page_sql, params)
        sides = (compiled, hand)
        measure(engine, sides, run_count, "count_ms", deadline, args.runs)
        iterate = run_keyset if args.iterate == "keyset" else run_iter
        measure(engine, sides, iterate, "iter_ms", deadline, max(3, args.runs - 2))
        res = {
            "label": q.label,
            "filter": q.raw,
            "in_goal": q.in_goal,
            "rows": compiled.rows,
            "hand_rows": hand.rows,
            "same_count": compiled.rows == hand.rows
            and compiled.iterated == compiled.rows
            and hand.iterated == hand.rows,
            "count_ms": med(compiled.count_ms),
            "hand_count_ms": med(hand.count_ms),
            "count_ratio": ratio(med(compiled.count_ms), med(hand.count_ms)),
            "iter_ms": med(compiled.iter_ms),
            "hand_iter_ms": med(hand.iter_ms),
            "iter_ratio": ratio(med(compiled.iter_ms), med(hand.iter_ms)),
            "min_count_ratio": ratio(least(compiled.count_ms), least(hand.count_ms)),
            "min_iter_ratio": ratio(least(compiled.iter_ms), least(hand.iter_ms)),
            "subset": q.subset,
            "runs": [len(compiled.count_ms), len(compiled.iter_ms)],
            "errors": [e for e in (compiled.error, hand.error) if e],
            "_sides": sides,
        }
        results[q.key] = res
        log(
            f"({q.key}) {q.label}: {res['rows']} rows (hand {res['hand_rows']}); count"
            f" {res['count_ms']} vs {res['hand_count_ms']} ms (x{res['count_ratio']}); iterate"
            f" {res['iter_ms']} vs {res['hand_iter_ms']} ms (x{res['iter_ratio']})"
            + (f"; ERRORS {res['errors']}" if res["errors"] else "")
        )

    evaluator: dict[str, Any] = {}
    if deadline.left() > 40:
        evaluator = evaluator_bench(engine, pid, now, conds, args.sample)
        log(
            f"evaluator over {evaluator['_load']}: "
            + ", ".join(
                f"({k}) {v['us_per_user']} µs" for k, v in evaluator.items() if k != "_load"
            )
        )

    explain_out = args.explain_out or f"/tmp/cairn_segments_explain_{dialect}.txt"
    explained = []
    if args.explain != "none":
        with open(explain_out, "w") as fh:
            for key, res in results.items():
                slow = any((res[k] or 0) > GOAL_RATIO for k in ("count_ratio", "iter_ratio"))
                if not (slow or args.explain == "all") or deadline.left() < 30:
                    continue
                explained.append(key)
                compiled, hand = res["_sides"]
                fh.write(f"===== ({key}) {res['label']}\n")
                for name, side in (("compiled", compiled), ("hand-written", hand)):
                    for what, stmt in (("count", side.count), ("ids", side.ids)):
                        fh.write(f"--- {name} {what}: {sql_text(engine, stmt, side.params)}\n")
                        try:
                            plan = explain(engine, stmt, side.params, dialect)
                        except Exception as exc:
                            plan = f"EXPLAIN failed: {exc}"
                        fh.write(plan + "\n\n")
                        if slow:
                            print(f"--- ({key}) {name} {what} plan:\n{plan}\n", flush=True)
        log(f"EXPLAIN of {explained or 'nothing'} written to {explain_out}")

    load_end = loadavg()
    print()
    print("=" * 100)
    print(
        f"SEGMENTS BENCH — {dialect}, {n_users:,} users, {n_events:,} events, "
        f"project {pid}; load average start {load_start} / end {load_end} "
        f"({os.cpu_count()} cores)"
    )
    if setup.get("users_rows_per_s"):
        print(
            f"load: users {setup['users_rows_per_s']:,}/s, events {setup['events_rows_per_s']:,}"
            f"/s, indexes {setup['index_build_s']}s, setup total {setup['setup_s']}s,"
            f" sizes {setup.get('sizes')}"
        )
    print(
        f"{'query':<42}{'rows':>9} {'count ms':>10} {'hand ms':>9} {'ratio':>6} "
        f"{'iter ms':>9} {'hand ms':>9} {'ratio':>6} {'eval µs':>8}  verdict"
    )
    failures = []
    for key, res in results.items():
        ev = evaluator.get(key, {})
        bad = []
        if res["in_goal"]:
            for k in ("count_ratio", "iter_ratio"):
                if res[k] is None or res[k] > GOAL_RATIO:
                    bad.append(f"{k.split('_')[0]} ratio")
            if (
                key == SELECTIVE
                and dialect == "postgresql"
                and (res["count_ms"] or 1e9) > GOAL_SELECTIVE_COUNT_MS
            ):
                bad.append("count > 10 ms")
        if not res["same_count"]:
            bad.append("COUNT MISMATCH")
        if ev and not ev["agree"]:
            bad.append("EVALUATOR DISAGREES")
        if res["errors"]:
            bad.append("errors")
        verdict = ("FAIL: " + ", ".join(bad)) if bad else ("ok" if res["in_goal"] else "(extra)")
        if bad and res["in_goal"]:
            failures.append(key)
        print(
            f"({key}) {res['label']:<38}{res['rows'] if res['rows'] is not None else '-':>9} "
            f"{res['count_ms'] or '-':>10} {res['hand_count_ms'] or '-':>9} "
            f"{res['count_ratio'] or '-':>6} {res['iter_ms'] or '-':>9} "
            f"{res['hand_iter_ms'] or '-':>9} {res['iter_ratio'] or '-':>6} "
            f"{ev.get('us_per_user', '-'):>8}  {verdict}"
            f"  [min ratios {res['min_count_ratio']}/{res['min_iter_ratio']}]"
        )
    how = "keyset pages" if args.iterate == "keyset" else "server-side cursor"
    print(
        f"goals: compiled/hand-written ratio <= {GOAL_RATIO} for count and iteration on (a)-(d);"
        f" selective count ({SELECTIVE}) <= {GOAL_SELECTIVE_COUNT_MS:.0f} ms at 1M users;"
        f" medians of warm runs (compiled and hand-written alternate); iteration reads ids"
        f" {CHUNK:,} at a time ({how})."
    )
    if evaluator:
        print(
            f"evaluator: µs per user of evaluate() over {evaluator['_load']['profiles']:,} "
            f"loaded profiles ({evaluator['_load']['events']:,} relevant events), agreement "
            + ", ".join(
                f"{k}:{'ok' if v['agree'] else 'NO'} ({v['matched']})"
                for k, v in evaluator.items()
                if k != "_load"
            )
        )
    if explained:
        print(f"EXPLAIN ANALYZE of {', '.join(explained)}: {explain_out}")
    print(
        f"total {deadline.elapsed():.0f}s; verdict: "
        + ("all goals met" if not failures else f"goal missed on {', '.join(failures)}")
    )
    print("=" * 100)
    summary = {
        "bench": "segments",
        "dialect": dialect,
        "users": n_users,
        "events": n_events,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "setup": setup,
        "queries": {
            k: {kk: vv for kk, vv in v.items() if kk != "_sides"} for k, v in results.items()
        },
        "evaluator": evaluator,
        "failures": failures,
        "total_s": round(deadline.elapsed(), 1),
    }
    emit(summary, args.json_out)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
