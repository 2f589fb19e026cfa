"""Fan-out benchmark: a 100K-user broadcast and in-app SSE latency, each beside an in-run baseline.

Run with `.venv/bin/python bench/fanout.py [--database-url URL] [--redis-url URL]`.

It resets its own database (default `cairn_bench_fanout`; never point it at data you keep) and
flushes its own Redis database (default db 5), then runs Cairn as deployed with a Redis broker:
`cairn serve` (API only: it enqueues) plus `python -m dramatiq workers.actors --processes 2
--threads 8`, and measures:

  raw       baseline: one `INSERT INTO messages ... SELECT ... FROM users` of the same rows
            (in a transaction rolled back): rows/s
  noop      baseline: a no-op Dramatiq actor (bench/noop_actor.py) on the same Redis, same
            2 processes x 8 threads, 250-id payloads: jobs/s
  broadcast POST /v1/notify {broadcast, inapp}: recipients created/s (until the send is `done`)
            and messages delivered/s (until every message is `sent`), also as jobs/s
  pubsub    baseline: Redis PUBLISH -> subscriber thread round trip at the same steady rate
  sse       POST /v1/notify {userId} at a steady rate while an SSE stream for that user is open:
            latency from POST start to the frame carrying the message id

The last line printed is one JSON object with every figure. The whole run stops by itself
(--max-seconds, default 225) and always stops what it started (process groups).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
import psycopg
import redis
import requests
from harness import HOST, PY, ROOT, BenchTimeout, Proc, SseReader, fmt_cpu, pct, ratio, verdict

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/cairn_bench_fanout"
DEFAULT_REDIS = "redis://127.0.0.1:6379/5"

# The goals from the issue.
GOAL_CREATED_PER_S = 20_000
GOAL_DELIVERY_RATIO = 0.8
GOAL_SSE_P50_MS = 50.0
GOAL_SSE_P99_MS = 250.0

JOB_BATCH = 250  # app.services.outbox.DELIVERY_BATCH: ids per deliver_messages job
# --quick: a smoke run of every phase in seconds (the figures mean nothing).
QUICK = {
    "users": 2000,
    "processes": 1,
    "threads": 2,
    "noop_jobs": 200,
    "latency_sends": 50,
    "pubsub_messages": 50,
}

sys.path.insert(0, str(ROOT))  # bench.noop_actor (namespace package) for the enqueue side


# --------------------------------------------------------------------------------------------
# Small helpers


T0 = time.monotonic()


def log(msg: str) -> None:
    """A progress line with the seconds since the start (the phases' timeline)."""
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Phases


def load_users(db: psycopg.Connection, project_id: int, n: int) -> float:
    t = time.perf_counter()
    harness.copy_users(db, project_id, n)
    db.commit()
    db.execute("ANALYZE users")
    db.commit()
    return time.perf_counter() - t


RAW_INSERT = """
INSERT INTO messages (project_id, send_id, user_id, channel, address, dedup_key, transactional,
                      status, expires_at, created_at, updated_at, enqueued_at, attempts,
                      increment_count)
SELECT %(p)s, %(s)s, u.id, 'inapp', 'user:' || u.id::text, %(dedup)s, false, 'queued', NULL,
       now(), now(), now(), 0, 1
FROM users u WHERE u.project_id = %(p)s AND u.external_id IS NOT NULL ORDER BY u.id
{conflict} RETURNING id
"""


def raw_insert(db: psycopg.Connection, project_id: int, *, on_conflict: bool) -> dict[str, Any]:
    """The same rows in one INSERT ... SELECT (with the send row the FK needs), rolled back."""
    send_id = db.execute(
        "INSERT INTO sends (project_id, kind, channels, content, transactional, status, cursor,"
        " recipients, deduplicated, created_at) VALUES (%s, 'notify', '[\"inapp\"]',"
        " '{\"body\": \"raw\"}', false, 'done', 0, 0, 0, now()) RETURNING id",
        (project_id,),
    ).fetchone()[0]
    sql = RAW_INSERT.format(
        conflict="ON CONFLICT (project_id, dedup_key, channel, address) DO NOTHING"
        if on_conflict
        else ""
    )
    t = time.perf_counter()
    rows = db.execute(sql, {"p": project_id, "s": send_id, "dedup": f"send:{send_id}"}).fetchall()
    elapsed = time.perf_counter() - t
    db.rollback()
    return {
        "rows": len(rows),
        "seconds": round(elapsed, 3),
        "rows_per_s": round(len(rows) / elapsed),
    }


def noop_baseline(
    env: dict[str, str],
    logdir: Path,
    redis_url: str,
    n_jobs: int,
    processes: int,
    threads: int,
    procs: list[Proc],
) -> dict[str, Any]:
    """A no-op actor's jobs/s on the same Redis with the same worker shape."""
    os.environ["BENCH_NOOP_REDIS"] = redis_url
    from bench import noop_actor  # after BENCH_NOOP_REDIS is set

    r = redis.Redis.from_url(redis_url)
    r.delete(noop_actor.COUNTER, noop_actor.FIRST, noop_actor.LAST)
    payload = list(range(10_000_000, 10_000_000 + JOB_BATCH))
    # Enqueue everything first (timed separately), then start the workers: the figure is the
    # consumers' rate alone, between the first and the last job processed.
    t = time.perf_counter()
    for _ in range(n_jobs):
        noop_actor.noop.send(payload)
    enqueue_s = time.perf_counter() - t
    log(f"noop: enqueued {n_jobs} jobs in {enqueue_s:.2f}s ({n_jobs / enqueue_s:.0f}/s)")
    worker = Proc(
        "noop-workers",
        harness.dramatiq_command("bench.noop_actor", processes, threads),
        dict(env, BENCH_NOOP_REDIS=redis_url),
        logdir,
    )
    procs.append(worker)
    cpu = harness.app_meter({"noop": worker})
    try:
        started = time.perf_counter()
        a = cpu.snap()
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline:
            done = int(r.get(noop_actor.COUNTER) or 0)
            if done >= n_jobs:
                break
            if not worker.alive():
                raise RuntimeError(f"noop workers exited:\n{worker.output()[-3000:]}")
            time.sleep(0.05)
        b = cpu.snap()
        first = float(r.get(noop_actor.FIRST) or 0)
        last = float(r.get(noop_actor.LAST) or 0)
        window = max(last - first, 1e-6)
        out = {
            "jobs": n_jobs,
            "processed": done,
            "enqueue_per_s": round(n_jobs / enqueue_s),
            "startup_to_done_s": round(time.perf_counter() - started, 2),
            "window_s": round(window, 3),
            "jobs_per_s": round((done - 1) / window) if done > 1 else 0,
            "cpu": cpu.cores(a, b),
        }
    finally:
        worker.stop()
        procs.remove(worker)
    noop_actor.broker.close()
    return out


def broadcast(
    api: str, sk: str, db: psycopg.Connection, n_users: int, timeout: float
) -> dict[str, Any]:
    t_wall = time.time()
    t = time.perf_counter()
    body = {"broadcast": True, "body": "hello", "channels": ["inapp"]}
    send_id = harness.post_notify(api, sk, body)
    post_ms = (time.perf_counter() - t) * 1000
    log(f"broadcast: send {send_id} accepted in {post_ms:.0f} ms")
    fanout_s = None
    delivered_s = None
    recipients = 0
    last_counts: dict[str, int] = {}
    next_count = 0.0
    deadline = time.monotonic() + timeout
    last_log = 0.0
    while time.monotonic() < deadline:
        status, recipients = db.execute(
            "SELECT status, recipients FROM sends WHERE id = %s", (send_id,)
        ).fetchone()
        now = time.perf_counter() - t
        if fanout_s is None and status == "done":
            fanout_s = now
            log(f"broadcast: fan-out done, {recipients} recipients in {fanout_s:.2f}s")
        if time.monotonic() >= next_count or fanout_s is not None:
            next_count = time.monotonic() + 0.5
            last_counts = harness.message_counts(db, send_id)
            if time.monotonic() - last_log > 5:
                last_log = time.monotonic()
                log(f"broadcast: t={now:.1f}s send={status} counts={last_counts}")
            pending = sum(last_counts.get(k, 0) for k in harness.PENDING)
            if fanout_s is not None and recipients and pending == 0:
                delivered_s = time.perf_counter() - t
                break
        db.commit()
        time.sleep(0.1)
    row = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'sent'),"
        " extract(epoch FROM min(sent_at)), extract(epoch FROM max(sent_at)),"
        " extract(epoch FROM max(created_at)) FROM messages WHERE send_id = %s",
        (send_id,),
    ).fetchone()
    db.commit()
    total, sent, first_sent, last_sent, _last_created = row
    jobs = math.ceil(recipients / JOB_BATCH) if recipients else 0
    out: dict[str, Any] = {
        "send_id": send_id,
        "users": n_users,
        "recipients": recipients,
        "messages": total,
        "sent": sent,
        "counts": last_counts,
        "post_ms": round(post_ms, 1),
        "jobs": jobs,
        "fanout_s": round(fanout_s, 2) if fanout_s else None,
        "delivered_s": round(delivered_s, 2) if delivered_s else None,
    }
    if fanout_s:
        out["created_per_s"] = round(recipients / fanout_s)
    if sent and last_sent is not None:
        # From the database's own timestamps (same clock as time.time() on this machine).
        e2e = float(last_sent) - t_wall
        window = max(float(last_sent) - float(first_sent), 1e-6)
        out["delivered_e2e_s"] = round(e2e, 2)
        out["delivered_per_s_e2e"] = round(sent / e2e)
        out["first_sent_after_s"] = round(float(first_sent) - t_wall, 2)
        out["delivery_window_s"] = round(window, 2)
        out["delivered_per_s"] = round(sent / window)
        out["jobs_per_s"] = round(sent / JOB_BATCH / window, 1)
    if delivered_s is None:
        out["timed_out"] = True
    return out


def pubsub_baseline(redis_url: str, rate: float, n: int) -> dict[str, Any]:
    """PUBLISH from one connection, a subscriber thread timestamps receipt; same steady rate."""
    channel = "bench:pubsub:rtt"
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    ready = threading.Event()
    sub = redis.Redis.from_url(redis_url)
    pubsub = sub.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(channel + "*")  # a pattern, as app.realtime.RedisHub listens

    def listen() -> None:
        ready.set()
        for m in pubsub.listen():
            if m.get("type") != "pmessage":
                continue
            payload = json.loads(m["data"])
            if payload.get("stop"):
                return
            got[payload["id"]] = time.perf_counter()

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    ready.wait(5)
    time.sleep(0.2)
    pub = redis.Redis.from_url(redis_url)
    body = {"content": {"body": "x" * 20}, "replaces": None, "count": 1}
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[i] = time.perf_counter()
        pub.publish(channel + ":1", json.dumps({"id": i, **body}))
    time.sleep(0.5)
    pub.publish(channel + ":1", json.dumps({"stop": True}))
    th.join(2)
    pubsub.close()
    lat = [got[i] - sent[i] for i in sent if i in got]
    return {
        "n": n,
        "received": len(lat),
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
        "max_ms": round(pct(lat, 100), 2),
    }


def frame_id(line: bytes) -> int | None:
    """A frame's message id, from its `id:` line."""
    return int(line[4:].strip()) if line.startswith(b"id: ") else None


class RedisTap(threading.Thread):
    """Timestamps the worker's PUBLISH for the user (splits SSE latency into its two legs)."""

    def __init__(self, redis_url: str, channel: str) -> None:
        super().__init__(daemon=True, name="redis-tap")
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.arrivals: dict[int, float] = {}
        self.stopped = False

    def run(self) -> None:
        while not self.stopped:
            with contextlib.suppress(Exception):
                m = self.pubsub.get_message(timeout=0.2)
                if m and m.get("type") == "message":
                    self.arrivals.setdefault(json.loads(m["data"])["id"], time.perf_counter())

    def stop(self) -> None:
        self.stopped = True
        self.join(2)
        with contextlib.suppress(Exception):
            self.pubsub.close()


def sse_latency(
    port: int,
    sk: str,
    pk: str,
    identity_secret: str,
    project_id: int,
    user_pk: int,
    redis_url: str,
    rate: float,
    n: int,
) -> dict[str, Any]:
    user = "u1"
    uhash = hmac.new(identity_secret.encode(), user.encode(), hashlib.sha256).hexdigest()
    path = "/v1/inbox/stream?" + urllib.parse.urlencode(
        {"key": pk, "userId": user, "userHash": uhash}
    )
    reader = SseReader(port, path, frame_id)
    reader.start()
    if not reader.connected.wait(10) or reader.error:
        raise RuntimeError(f"SSE stream did not connect: {reader.error}")
    tap = RedisTap(redis_url, f"cairn:inapp:{project_id}:{user_pk}")
    tap.start()
    time.sleep(0.3)
    api = f"http://{HOST}:{port}"
    local = threading.local()
    starts: dict[int, float] = {}
    post_times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int, due: float) -> None:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            s.headers["Authorization"] = f"Bearer {sk}"
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        try:
            r = s.post(api + "/v1/notify", json={"userId": user, "body": f"{t:.6f}"}, timeout=10)
            took = time.perf_counter() - t
            if r.status_code != 202:
                raise RuntimeError(f"{r.status_code} {r.text[:200]}")
            ids = r.json().get("messageIds") or []
            with lock:
                post_times.append(took)
                for mid in ids:
                    starts[mid] = t
        except Exception as err:
            with lock:
                errors.append(str(err))

    start = time.perf_counter() + 0.05
    with ThreadPoolExecutor(8) as pool:
        for i in range(n):
            pool.submit(one, i, start + i / rate)
    send_span = time.perf_counter() - start
    # Let the last frames arrive.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not set(starts) <= set(reader.arrivals):
        time.sleep(0.05)
    reader.stop()
    tap.stop()
    lat = [reader.arrivals[m] - t for m, t in starts.items() if m in reader.arrivals]
    leg1 = [tap.arrivals[m] - t for m, t in starts.items() if m in tap.arrivals]
    leg2 = [
        reader.arrivals[m] - tap.arrivals[m]
        for m in starts
        if m in reader.arrivals and m in tap.arrivals
    ]
    missing = sorted(set(starts) - set(reader.arrivals))
    published_not_streamed = sorted(set(tap.arrivals) & set(missing))
    order = tap_order(tap)
    out_of_order = sum(1 for a, b in itertools.pairwise(order) if b < a)
    return {
        "sends": n,
        "accepted": len(starts),
        "errors": len(errors),
        "error_sample": errors[:3],
        "send_rate": round(len(starts) / send_span, 1),
        "frames": len(lat),
        "missing_frames": len(missing),
        "missing_but_published": len(published_not_streamed),
        "published": len(tap.arrivals),
        "publish_out_of_order": out_of_order,
        "post_p50_ms": round(pct(post_times, 50), 1),
        "post_p99_ms": round(pct(post_times, 99), 1),
        "p50_ms": round(pct(lat, 50), 1),
        "p99_ms": round(pct(lat, 99), 1),
        "max_ms": round(pct(lat, 100), 1),
        "to_publish_p50_ms": round(pct(leg1, 50), 1),
        "to_publish_p99_ms": round(pct(leg1, 99), 1),
        "publish_to_frame_p50_ms": round(pct(leg2, 50), 1),
        "publish_to_frame_p99_ms": round(pct(leg2, 99), 1),
        "stream_error": reader.error if reader.error and "closed" not in reader.error else None,
    }


def tap_order(tap: RedisTap) -> list[int]:
    return [m for m, _ in sorted(tap.arrivals.items(), key=lambda kv: kv[1])]


# --------------------------------------------------------------------------------------------
# Main


def main() -> int:
    ap = harness.app_parser(__doc__, DEFAULT_URL, DEFAULT_REDIS, 225.0)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--noop-jobs", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=50.0, help="latency phases: sends per second")
    ap.add_argument("--latency-sends", type=int, default=1000)
    ap.add_argument("--pubsub-messages", type=int, default=500)
    ap.add_argument(
        "--py-spy",
        default=None,
        metavar="DIR",
        help="record the workers with py-spy during the broadcast (collapsed stacks)",
    )
    ap.add_argument(
        "--worker-timeout-ms",
        type=int,
        default=None,
        help="experiment: set dramatiq_worker_timeout for the app's workers (caps the"
        " idle consumer's poll backoff; Dramatiq's default is 1000)",
    )
    args = harness.parse(ap, None, QUICK)
    rc = 0
    with harness.app_run(args, "cairn-bench-fanout-", {"users": args.users}, True) as run:
        procs, logdir, env, results = run.procs, run.logdir, run.env, run.results
        try:
            # ---- setup
            creds = run.setup_project()
            project_id, sk, pk = creds["id"], creds["secretKey"], creds["publishableKey"]
            db = psycopg.connect(**harness.conn_kwargs(args.database_url))
            took = load_users(db, project_id, args.users)
            log(f"setup: project {project_id}, {args.users} users copied in {took:.2f}s")
            user_pk = db.execute(
                "SELECT id FROM users WHERE project_id = %s AND external_id = 'u1'", (project_id,)
            ).fetchone()[0]
            db.commit()

            # ---- baseline: raw INSERT ... SELECT
            raw = raw_insert(db, project_id, on_conflict=False)
            raw_oc = raw_insert(db, project_id, on_conflict=True)
            db.autocommit = True
            db.execute("VACUUM ANALYZE messages")
            db.execute("VACUUM ANALYZE sends")
            db.autocommit = False
            results["raw_insert"] = raw
            results["raw_insert_on_conflict"] = raw_oc
            log(
                f"raw: INSERT ... SELECT {raw['rows']} rows in {raw['seconds']}s"
                f" = {raw['rows_per_s']}/s (with ON CONFLICT DO NOTHING: {raw_oc['rows_per_s']}/s)"
            )

            # ---- baseline: no-op actor
            noop = noop_baseline(
                env, logdir, args.redis_url, args.noop_jobs, args.processes, args.threads, procs
            )
            results["noop"] = noop
            log(
                f"noop: {noop['processed']} jobs, {noop['jobs_per_s']} jobs/s over"
                f" {noop['window_s']}s; cpu {fmt_cpu(noop['cpu'])}"
            )

            # ---- the system: serve (API) + dramatiq workers
            wenv = dict(env)
            if args.worker_timeout_ms:
                wenv["dramatiq_worker_timeout"] = str(args.worker_timeout_ms)
            app = run.start_app(worker_env=wenv)
            serve, workers, port, api = app
            log(f"serve on :{port}, workers ready (logs in {logdir})")
            cpu = harness.app_meter({"serve": serve, "workers": workers})

            # ---- broadcast
            reserve = 20 + args.latency_sends / args.rate + args.pubsub_messages / args.rate
            budget = args.max_seconds - (time.monotonic() - run.started) - reserve
            spy = None
            if args.py_spy:
                Path(args.py_spy).mkdir(parents=True, exist_ok=True)
                spy = subprocess.Popen(
                    [
                        str(Path(PY).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(workers.proc.pid),
                        "--subprocesses",
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--output",
                        str(Path(args.py_spy) / "workers-broadcast.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                time.sleep(1)
            a = cpu.snap()
            try:
                bc = broadcast(api, sk, db, args.users, timeout=max(10.0, min(150.0, budget)))
            finally:
                if spy is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(spy.pid, signal.SIGINT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        spy.wait(20)
                    if spy.poll() is None:
                        os.killpg(spy.pid, signal.SIGKILL)
            bc["cpu"] = cpu.cores(a, cpu.snap())
            results["broadcast"] = bc
            log(f"broadcast: {json.dumps(bc)}")
            if bc.get("timed_out"):
                rc = 1
                log(
                    "broadcast: NOT all messages delivered in time; purging the deliver queue so"
                    " the latency phase is not stuck behind the backlog"
                )
                r = redis.Redis.from_url(args.redis_url)
                for key in r.scan_iter("dramatiq:deliver*"):
                    r.delete(key)

            # ---- baseline: Redis pub/sub round trip
            ps = pubsub_baseline(args.redis_url, args.rate, args.pubsub_messages)
            results["pubsub"] = ps
            log(f"pubsub: {json.dumps(ps)}")

            # ---- SSE latency
            a = cpu.snap()
            sse = sse_latency(
                port,
                sk,
                pk,
                creds["identitySecret"],
                project_id,
                user_pk,
                args.redis_url,
                args.rate,
                args.latency_sends,
            )
            sse["cpu"] = cpu.cores(a, cpu.snap())
            results["sse"] = sse
            log(f"sse: {json.dumps(sse)}")

            # App errors seen in the logs.
            for p in (serve, workers):
                text = p.output()
                results.setdefault("log_errors", {})[p.name] = problems = harness.log_problems(text)
                if problems["tracebacks"]:
                    i = text.find("Traceback (most recent call last)")
                    results["log_errors"][p.name]["first"] = text[max(0, i - 300) : i + 2500]
            db.close()
        except BenchTimeout as err:
            log(f"ABORTED: {err}")
            results["aborted"] = str(err)
            rc = 2
        except Exception as err:
            log(f"FAILED: {type(err).__name__}: {err}")
            results["failed"] = f"{type(err).__name__}: {err}"
            rc = 2
    results["total_s"] = round(time.monotonic() - run.started, 1)

    summary(results)
    harness.emit(results, args.json_out)
    return rc


def summary(r: dict[str, Any]) -> None:
    raw = r.get("raw_insert", {})
    noop = r.get("noop", {})
    bc = r.get("broadcast", {})
    sse = r.get("sse", {})
    ps = r.get("pubsub", {})
    noop_jps = noop.get("jobs_per_s")
    created_ratio = ratio(bc.get("created_per_s"), raw.get("rows_per_s"))
    jobs_ratio = ratio(bc.get("jobs_per_s"), noop_jps)
    msgs_ratio = ratio(bc.get("delivered_per_s"), noop_jps)
    r["ratios"] = {
        "created_vs_raw": created_ratio,
        "delivery_jobs_vs_noop": jobs_ratio,
        "delivery_msgs_vs_noop_msgs": msgs_ratio,
        "sse_p50_vs_pubsub": ratio(sse.get("p50_ms"), ps.get("p50_ms")),
        "sse_p99_vs_pubsub": ratio(sse.get("p99_ms"), ps.get("p99_ms")),
    }

    def ok(flag: bool | None) -> str:
        return " " + verdict(flag)

    def f(v: Any, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:,}{unit}" if isinstance(v, int) else f"{v}{unit}"

    print("\n" + "=" * 100)
    print(
        f"FAN-OUT BENCH  users={r['users']}  workers={r['processes']}x{r['threads']}"
        f"  total {r.get('total_s')}s  logs {r['logs']}"
    )
    if "failed" in r or "aborted" in r:
        print(f"  !! {r.get('failed') or r.get('aborted')}")
    print("-" * 100)
    c = bc.get("created_per_s")
    print(
        f"created     {f(c, '/s'):>14}  (fan-out {f(bc.get('fanout_s'), 's')} for"
        f" {f(bc.get('recipients'))})   raw INSERT..SELECT {f(raw.get('rows_per_s'), '/s')}"
        f" (ON CONFLICT {f(r.get('raw_insert_on_conflict', {}).get('rows_per_s'), '/s')})"
        f"   ratio {f(created_ratio)}   goal >= {GOAL_CREATED_PER_S:,}/s"
        f"{ok(None if c is None else c >= GOAL_CREATED_PER_S)}"
    )
    d = bc.get("delivered_per_s")
    print(
        f"delivered   {f(d, ' msg/s'):>14}  = {f(bc.get('jobs_per_s'), ' jobs/s')} (window"
        f" {f(bc.get('delivery_window_s'), 's')}; from POST:"
        f" {f(bc.get('delivered_per_s_e2e'), '/s')} in {f(bc.get('delivered_e2e_s'), 's')};"
        f" sent {f(bc.get('sent'))}/{f(bc.get('messages'))})"
    )
    print(
        f"            no-op actor {f(noop_jps, ' jobs/s')} (msgs/s)   jobs/s ratio"
        f" {f(jobs_ratio)}   msg/s ratio {f(msgs_ratio)}   goal jobs ratio >="
        f" {GOAL_DELIVERY_RATIO}"
        f"{ok(None if jobs_ratio is None else jobs_ratio >= GOAL_DELIVERY_RATIO)}"
    )
    print(f"            cpu during broadcast: {fmt_cpu(bc.get('cpu', {}))}")
    print(f"            cpu during no-op:     {fmt_cpu(noop.get('cpu', {}))}")
    p50, p99 = sse.get("p50_ms"), sse.get("p99_ms")
    print(
        f"sse latency p50 {f(p50, ' ms')} p99 {f(p99, ' ms')} max {f(sse.get('max_ms'), ' ms')}"
        f"   pubsub baseline p50 {f(ps.get('p50_ms'), ' ms')} p99 {f(ps.get('p99_ms'), ' ms')}"
        f"   ratio p50 {f(r['ratios']['sse_p50_vs_pubsub'])} p99"
        f" {f(r['ratios']['sse_p99_vs_pubsub'])}"
    )
    print(
        f"            goal p50 <= {GOAL_SSE_P50_MS:.0f} ms"
        f"{ok(None if p50 is None else p50 <= GOAL_SSE_P50_MS)}, p99 <= {GOAL_SSE_P99_MS:.0f} ms"
        f"{ok(None if p99 is None else p99 <= GOAL_SSE_P99_MS)}"
    )
    print(
        f"            legs: POST->worker PUBLISH p50 {f(sse.get('to_publish_p50_ms'), ' ms')}"
        f" p99 {f(sse.get('to_publish_p99_ms'), ' ms')}; PUBLISH->SSE frame p50"
        f" {f(sse.get('publish_to_frame_p50_ms'), ' ms')} p99"
        f" {f(sse.get('publish_to_frame_p99_ms'), ' ms')}; POST itself p50"
        f" {f(sse.get('post_p50_ms'), ' ms')} p99 {f(sse.get('post_p99_ms'), ' ms')}"
    )
    print(
        f"            frames {f(sse.get('frames'))}/{f(sse.get('accepted'))} accepted"
        f" (missing {f(sse.get('missing_frames'))}, of which published"
        f" {f(sse.get('missing_but_published'))}; publishes out of id order"
        f" {f(sse.get('publish_out_of_order'))}); POST errors {f(sse.get('errors'))}"
    )
    print(
        "            (latency percentiles cover the frames that arrived; a missing frame is one"
        " the stream skipped)"
    )
    busy = [
        f"{k} {v.get('cpu', {}).get('other')}"
        for k, v in (("broadcast", bc), ("no-op", noop), ("sse", sse))
        if (v.get("cpu", {}).get("other") or 0) > 0.3
    ]
    if busy:
        print(
            f"WARNING: other processes used CPU during {', '.join(busy)} cores (of"
            f" {os.cpu_count()}): the machine was busy, figures are pessimistic"
        )
    for name, e in (r.get("log_errors") or {}).items():
        if e.get("tracebacks") or e.get("errors"):
            print(f"log {name}: {e['tracebacks']} tracebacks, {e['errors']} error lines")
    print("=" * 100, flush=True)


if __name__ == "__main__":
    sys.exit(main())
