"""Profile one ingestion path in-process: where the time of a request goes, without HTTP.

Run with `.venv/bin/python bench/profile_ingest.py [--path events|track] [--requests N]`.

Resets its own database (default `cairn_bench`, like bench/ingest.py), builds the app, and posts
requests through the Flask test client one after the other (no concurrency, so no lock waits).
Prints the mean latency, the time spent per SQL statement kind (measured around the driver call:
driver-side query conversion, round trip and PostgreSQL execution), and the top cProfile entries.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness
from harness import reset_database
from ingest import DEFAULT_URL, analyze, make_batches, track_body
from sqlalchemy import event

# --quick: a smoke run in seconds (the figures mean nothing).
QUICK = {"requests": 3, "batch_size": 50, "top": 5}


def statement_kind(sql: str) -> str:
    """`INSERT INTO events`, `UPDATE users`, `SELECT ... FROM users`: the statement's shape."""
    words = sql.split()
    head = words[0].upper() if words else "?"
    m = re.search(r"\b(?:INTO|UPDATE|FROM)\s+\"?(\w+)", sql, re.IGNORECASE)
    extra = ""
    if head == "UPDATE" and "CASE" in sql:
        extra = " SET ... CASE"
    if head == "INSERT" and "ON CONFLICT" in sql:
        extra = " ON CONFLICT"
    return f"{head} {m.group(1) if m else ''}{extra}"


def main() -> int:
    p = harness.parser(__doc__, os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL), json_out=False)
    p.add_argument("--path", choices=["events", "track"], default="events")
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--cpu-clock",
        action="store_true",
        help="profile CPU time instead of wall time (DB waits excluded)",
    )
    p.add_argument("--no-cprofile", action="store_true", help="time only (no profiler overhead)")
    p.add_argument(
        "--no-analyze",
        action="store_true",
        help="skip ANALYZE after the warm-up (see bench/README.md)",
    )
    args = harness.parse(p, None, QUICK)

    reset_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    import tempfile

    os.environ.setdefault("INSTANCE_DIR", tempfile.mkdtemp(prefix="cairn-profile-"))
    from app import create_app
    from app.cli import upgrade_database
    from app.db import db
    from app.services.projects import create_project

    app = create_app()
    with app.app_context():
        upgrade_database()
        with db.begin() as session:
            _, sk, _ = create_project(session, name="profile")
            key = sk.key
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def bodies(n: int) -> list[bytes]:
        if args.path == "events":
            return make_batches(n, args.batch_size)
        rnd = random.Random()
        return [track_body(rnd) for _ in range(n)]

    url = "/v1/events" if args.path == "events" else "/v1/track"
    for body in bodies(5):  # warm-up: connections, statement caches
        assert client.post(url, data=body, headers=headers).status_code in (200, 202)
    if args.path == "track":  # users known already, as after a while in production
        for body in make_batches(2, 50) if args.quick else make_batches(20, 1000):
            assert client.post("/v1/events", data=body, headers=headers).status_code == 202
    if not args.no_analyze:
        analyze(args.database_url)

    sql_time: dict[str, float] = defaultdict(float)
    sql_count: dict[str, int] = defaultdict(int)
    started: dict[int, float] = {}
    assert db.engine is not None

    @event.listens_for(db.engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started[id(cursor)] = time.perf_counter()

    @event.listens_for(db.engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        kind = statement_kind(statement)
        sql_time[kind] += time.perf_counter() - started.pop(id(cursor), time.perf_counter())
        sql_count[kind] += 1

    work = bodies(args.requests)
    # CPU clock: waiting on PostgreSQL does not count, so the entries are this process's work.
    prof = cProfile.Profile(time.process_time) if args.cpu_clock else cProfile.Profile()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if not args.no_cprofile:
        prof.enable()
    for body in work:
        resp = client.post(url, data=body, headers=headers)
        assert resp.status_code in (200, 202), resp.get_data()
    prof.disable()
    total = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    per = total / args.requests
    events = args.requests * (args.batch_size if args.path == "events" else 1)
    print(
        f"\n{args.requests} x POST {url}: {per * 1000:.1f} ms a request, "
        f"{events / total:,.0f} events/s serial, in-process"
        + ("" if args.no_cprofile else " (cProfile on: ~1.5-2x slower)")
    )
    print(
        f"app CPU (this process, PostgreSQL excluded): {cpu / args.requests * 1000:.1f} ms a "
        f"request, {cpu / total * 100:.0f}% of wall time"
    )
    print("\nSQL time by statement kind (around the driver call; % of wall time):")
    for kind, secs in sorted(sql_time.items(), key=lambda kv: -kv[1]):
        print(
            f"  {secs / total * 100:5.1f}%  {secs / args.requests * 1000:7.2f} ms/req  "
            f"{sql_count[kind] / args.requests:5.1f} executes/req  {kind}"
        )
    if args.no_cprofile:
        return 0
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
