"""Profile the event processor and the deliveries it causes in-process: where the time goes.

Run with `.venv/bin/python bench/profile_trigger.py [--events N] [--users N]`.

Resets its own database (default `cairn_bench_profile_trigger`), builds the app, defines the
automation of bench/trigger.py (20 rules `e<i>` → audience `a<i>`, 20 triggered campaigns `e<i>`
→ in-app + web push), stores --events events (`e<i>`, round-robin over --users users without a
push device) through `POST /v1/events` with no worker running, then calls the event processor
(`workers.events.process_events`) on them in jobs of --job-size events, and then the delivery
of the messages they created (`workers.delivery.deliver_batch`), as the actors would, one after
the other. Prints events/s and messages/s in-process, the SQL time by statement kind, and the top
cProfile entries of each phase.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness
from harness import reset_database
from profile_ingest import statement_kind
from sqlalchemy import event, select

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/cairn_bench_profile_trigger"
QUICK = {"events": 100, "users": 50, "top": 5}
RULES = 20


class SqlMeter:
    """Time per SQL statement kind, measured around the driver call."""

    def __init__(self, engine: Any) -> None:
        self.time: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        started: dict[int, float] = {}

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            started[id(cursor)] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            kind = statement_kind(statement)
            self.time[kind] += time.perf_counter() - started.pop(id(cursor), time.perf_counter())
            self.count[kind] += 1

    def reset(self) -> None:
        self.time.clear()
        self.count.clear()

    def report(self, total: float, per: int, unit: str) -> None:
        print(f"SQL time by statement kind (% of wall time; per {unit}):")
        for kind, secs in sorted(self.time.items(), key=lambda kv: -kv[1])[:15]:
            print(
                f"  {secs / total * 100:5.1f}%  {secs / per * 1000:7.3f} ms  "
                f"{self.count[kind] / per:6.2f} executes  {kind}"
            )


def profiled(label: str, args: Any, meter: SqlMeter, units: int, unit: str, work: Any) -> float:
    meter.reset()
    prof = cProfile.Profile()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if not args.no_cprofile:
        prof.enable()
    work()
    prof.disable()
    took = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print(
        f"\n== {label}: {units} {unit}s in {took:.2f}s = {units / took:,.0f}/s in-process"
        + ("" if args.no_cprofile else " (cProfile on)")
        + f"; app CPU {cpu / units * 1000:.2f} ms per {unit}"
    )
    meter.report(took, units, unit)
    if not args.no_cprofile:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).strip_dirs()
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
    return took


def main() -> int:
    p = harness.parser(__doc__, os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL), json_out=False)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--job-size", type=int, default=500)
    p.add_argument("--deliver-size", type=int, default=250, help="messages per delivery job")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--no-cprofile", action="store_true", help="time only (no profiler overhead)")
    args = harness.parse(p, None, QUICK)

    reset_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("INSTANCE_DIR", tempfile.mkdtemp(prefix="cairn-profile-"))
    os.environ.setdefault("VAPID_SUBJECT", "mailto:bench-ops@cairn-bench.io")
    from app import create_app
    from app.cli import upgrade_database
    from app.db import db
    from app.models import Event
    from app.models.message import Message
    from app.services.projects import create_project
    from workers import runtime
    from workers.delivery import deliver_batch
    from workers.events import process_events

    app = create_app({"ALLOW_PRIVATE_ENDPOINTS": True})
    with app.app_context():
        upgrade_database()
        with db.begin() as session:
            _, sk, _ = create_project(session, name="profile")
            key = sk.key
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}

    def call(method: str, path: str, body: Any) -> Any:
        r = client.open(path, method=method, json=body, headers=headers)
        assert r.status_code < 300, (path, r.status_code, r.get_data()[:300])
        return r.get_json()

    for i in range(RULES):
        call(
            "POST",
            "/v1/templates",
            {
                "name": f"t{i}",
                "channels": {
                    "inapp": {"en": {"title": f"Offer {i}", "body": "{{ params.token }}"}},
                    "push": {"en": {"title": f"Offer {i}", "body": "{{ params.token }}"}},
                },
            },
        )
        call("POST", "/v1/audiences", {"name": f"a{i}"})
        call(
            "POST",
            "/v1/rules",
            {
                "name": f"r{i}",
                "when": {"event": f"e{i}", "where": "src:bench"},
                "then": [{"addToAudience": f"a{i}", "ttlSeconds": 3600}],
            },
        )
        c = call(
            "POST",
            "/v1/campaigns",
            {
                "name": f"c{i}",
                "kind": "triggered",
                "trigger": {"event": f"e{i}"},
                "channels": {"inapp": f"t{i}", "push": f"t{i}"},
                "category": "transactional",
                "ttlSeconds": 3600,
            },
        )
        call("POST", f"/v1/campaigns/{c['id']}/activate", None)

    def post_events(n: int, tag: str) -> list[int]:
        for start in range(0, n, 500):
            batch = [
                {
                    "name": f"e{k % RULES}",
                    "userId": f"u{k % args.users}",
                    "properties": {"src": "bench", "token": f"{tag}{k}"},
                }
                for k in range(start, min(n, start + 500))
            ]
            body = call("POST", "/v1/events", batch)
            assert body["accepted"] == len(batch), (len(batch), body)
        deadline = time.monotonic() + 120
        while True:  # ingestion commits in groups, a moment after the 202
            ids = list(
                db.session.scalars(
                    select(Event.id).where(Event.processed_at.is_(None)).order_by(Event.id)
                )
            )
            db.session.commit()
            if len(ids) >= n or time.monotonic() > deadline:
                return ids
            time.sleep(0.2)

    settings = dict(app.config)
    with app.app_context():
        runtime.configure(engine=db.engine, settings=settings)
        meter = SqlMeter(db.engine)
        # Warm-up: caches, prepared statements, the rules and campaigns loaded once.
        warm = post_events(50, "w")
        with db.sessionmaker() as session:
            process_events(session, warm, settings)
        queued = list(db.session.scalars(select(Message.id).where(Message.status == "queued")))
        db.session.commit()
        with db.sessionmaker() as session:
            deliver_batch(session, queued, settings)

        ids = post_events(args.events, "k")

        def run_events() -> None:
            for start in range(0, len(ids), args.job_size):
                with db.sessionmaker() as session:
                    process_events(session, ids[start : start + args.job_size], settings)

        profiled("process_events", args, meter, len(ids), "event", run_events)
        queued = list(db.session.scalars(select(Message.id).where(Message.status == "queued")))
        db.session.commit()
        print(f"messages queued by the events: {len(queued)}")

        def run_deliveries() -> None:
            for start in range(0, len(queued), args.deliver_size):
                with db.sessionmaker() as session:
                    deliver_batch(session, queued[start : start + args.deliver_size], settings)

        if queued:
            profiled(
                "deliver_batch (250 a job)", args, meter, len(queued), "message", run_deliveries
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
