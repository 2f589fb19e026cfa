"""Ingestion benchmark: events/s through `cairn serve` against a raw PostgreSQL COPY baseline.

Run with `make bench` or `.venv/bin/python bench/ingest.py [--database-url URL]`.

It resets its own database (default `cairn_bench`; never point it at data you keep), starts the
server exactly as `cairn serve` does (gunicorn gthread workers), and measures:

  batched   POST /v1/events, 1000 events a request, by a few concurrent keep-alive senders
  single    POST /v1/track (Segment spec), one event a request, closed loop, for a few seconds
  paced     POST /v1/track at a fixed target rate (latency counted from the scheduled send time)
  copy      psycopg 3 `COPY events (...) FROM STDIN` of as many equivalent rows, then deleted
  ceiling   GET /healthz, closed loop: what the HTTP stack alone manages on this machine

The last line printed is one JSON object with every figure. The whole run stops by itself
(--max-seconds, default 170) and always stops the server.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import multiprocessing as mp
import os
import queue
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
import psycopg
from harness import (
    HOST,
    BenchTimeout,
    CpuMeter,
    Deadline,
    Proc,
    alarm,
    backend_pids,
    cairn_command,
    check_database,
    conn_kwargs,
    emit,
    free_port,
    log,
    log_problems,
    pct,
    reset_database,
    verdict,
)
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/cairn_bench"

# The goals from the ingestion issue.
GOAL_BATCHED_EPS = 20_000
GOAL_BATCHED_RATIO = 0.1
GOAL_SINGLE_EPS = 2_000
GOAL_SINGLE_P99_MS = 25.0

PROPERTIES = {"path": "/p/123", "ref": "x", "n": 42}
COPY_COLUMNS = (
    "project_id, user_id, name, properties, message_id, source, timestamp, received_at, erased"
)
# --quick: a smoke run of every phase in seconds (the figures mean nothing).
QUICK = {
    "batches": 4,
    "batch_size": 100,
    "senders": "2",
    "single_seconds": 3.0,
    "single_procs": 1,
    "single_threads": 2,
    "paced_rate": 100.0,
    "paced_seconds": 3.0,
    "paced_threads": 2,
    "ceiling_seconds": 2.0,
}


# --------------------------------------------------------------------------------------------
# Server


@dataclass
class Server:
    """`cairn serve` as deployed, on a free port, with the secret key it printed on first start."""

    proc: Proc
    port: int
    secret_key: str


def start_server(
    url: str, instance_dir: str, workers: int | None, threads: int | None, timeout: float
) -> Server:
    port = free_port()
    cmd = [cairn_command(), "serve", "--host", HOST, "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, DATABASE_URL=url, INSTANCE_DIR=instance_dir, PYTHONUNBUFFERED="1")
    log("starting: " + " ".join(cmd))
    proc = Proc("server", cmd, env, Path(instance_dir))
    try:
        line = proc.wait_for_line(lambda text: text.strip().startswith("secret key"), timeout)
        proc.wait_http_ok(f"http://{HOST}:{port}/healthz", timeout)
    except RuntimeError as err:
        proc.stop(timeout=10)
        sys.exit(str(err))
    return Server(proc, port, line.split()[-1])


# --------------------------------------------------------------------------------------------
# HTTP clients


def event(uid: int) -> dict[str, Any]:
    return {
        "name": "page_view",
        "userId": f"u{uid}",
        "properties": PROPERTIES,
        "messageId": str(uuid.uuid4()),
    }


def track_body(rnd: random.Random) -> bytes:
    """One Segment-spec `track` call, as an SDK sends it."""
    return json.dumps(
        {
            "event": "page_view",
            "userId": f"u{rnd.randrange(100_000)}",
            "properties": PROPERTIES,
            "messageId": str(uuid.uuid4()),
        }
    ).encode()


def make_batches(count: int, size: int) -> list[bytes]:
    rnd = random.Random()
    return [
        json.dumps([event(rnd.randrange(100_000)) for _ in range(size)]).encode()
        for _ in range(count)
    ]


def post(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


@dataclass
class RunResult:
    name: str
    clients: int
    seconds: float
    requests: int
    events: int
    errors: int
    latencies: list[float]
    client_cpu: float = 0.0
    target_rate: float | None = None
    first_error: str | None = None
    missed: int = 0

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "events": self.events,
            "errors": self.errors,
            "events_per_s": round(self.eps, 1),
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0,
            "p50_ms": round(pct(self.latencies, 50), 2),
            "p99_ms": round(pct(self.latencies, 99), 2),
            "client_cpu_share": round(self.client_cpu / self.seconds, 2) if self.seconds else 0,
        }
        if self.target_rate:
            out["target_rate"] = self.target_rate
            out["missed"] = self.missed
        if self.first_error:
            out["first_error"] = self.first_error[:300]
        return out


def run_batched(port: int, key: str, bodies: list[bytes], senders: int, budget: float) -> RunResult:
    """Send every body once through `senders` keep-alive connections; stop at `budget` s."""
    work: queue.Queue[bytes] = queue.Queue()
    for b in bodies:
        work.put(b)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    lat: list[float] = []
    stats = {"requests": 0, "events": 0, "errors": 0}
    first_error: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + budget

    def sender() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        while time.monotonic() < stop_at:
            try:
                body = work.get_nowait()
            except queue.Empty:
                break
            t0 = time.perf_counter()
            try:
                status, data = post(conn, "/v1/events", body, headers)
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
                with lock:
                    stats["errors"] += 1
                    first_error.append(repr(err))
                continue
            dt = time.perf_counter() - t0
            with lock:
                stats["requests"] += 1
                if status == 202:
                    lat.append(dt)
                    stats["events"] += json.loads(data)["accepted"]
                else:
                    stats["errors"] += 1
                    first_error.append(f"{status} {data[:200]!r}")
        conn.close()

    cpu0 = sum(os.times()[:2])
    t0 = time.perf_counter()
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, stop_at - time.monotonic() + 65))
    seconds = time.perf_counter() - t0
    cpu = sum(os.times()[:2]) - cpu0
    return RunResult(
        f"batched x{senders}",
        senders,
        seconds,
        stats["requests"],
        stats["events"],
        stats["errors"],
        lat,
        cpu,
        None,
        first_error[0] if first_error else None,
    )


def _single_client_proc(
    port: int,
    key: str,
    threads: int,
    duration: float,
    rate_per_thread: float | None,
    start_at: float,
    out: mp.Queue,
    path: str,
) -> None:  # type: ignore[type-arg]
    """One client process: `threads` keep-alive connections sending /v1/track calls.

    With path /healthz it sends `GET /healthz` instead: the HTTP stack's ceiling, no database.
    """
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    results: list[tuple[list[float], int, int, int, str | None]] = []
    lock = threading.Lock()

    def loop() -> None:
        rnd = random.Random()
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        lat: list[float] = []
        ok = errors = missed = 0
        err_text: str | None = None
        interval = 1.0 / rate_per_thread if rate_per_thread else 0.0
        # Spread the threads' schedules over one interval.
        next_at = start_at + rnd.random() * interval
        end = start_at + duration
        while True:
            if interval:
                now = time.monotonic()
                if next_at >= end or now >= end:
                    # Sends still due when time is up are counted as missed, not sent late.
                    if next_at < end:
                        missed += int((end - next_at) / interval) + 1
                    break
                if next_at > now:
                    time.sleep(next_at - now)
                scheduled = next_at
                next_at += interval
            else:
                scheduled = time.monotonic()
                if scheduled >= end:
                    break
            body = track_body(rnd)
            t0 = time.perf_counter()
            try:
                if path == "/healthz":
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                else:
                    status, data = post(conn, path, body, headers)
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
                errors += 1
                err_text = err_text or repr(err)
                continue
            # Paced: from the scheduled send time, so a stalled server is not hidden.
            done = time.monotonic()
            dt = done - scheduled if interval else time.perf_counter() - t0
            if status == 200:
                ok += 1
                lat.append(dt)
            else:
                errors += 1
                err_text = err_text or f"{status} {data[:200]!r}"
        conn.close()
        with lock:
            results.append((lat, ok, errors, missed, err_text))

    while time.monotonic() < start_at - 0.05:
        time.sleep(0.01)
    ts = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=duration + 40)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    lat_all = [x for r in results for x in r[0]]
    errs = [r[4] for r in results if r[4]]
    out.put(
        {
            "lat": lat_all,
            "ok": sum(r[1] for r in results),
            "errors": sum(r[2] for r in results),
            "missed": sum(r[3] for r in results),
            "cpu": usage.ru_utime + usage.ru_stime,
            "error": errs[0] if errs else None,
        }
    )


def run_single(
    port: int,
    key: str,
    procs: int,
    threads: int,
    duration: float,
    rate: float | None,
    path: str = "/v1/track",
) -> RunResult:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    start_at = time.monotonic() + 0.5
    per_thread = rate / (procs * threads) if rate else None
    ps = [
        ctx.Process(
            target=_single_client_proc,
            daemon=True,
            args=(port, key, threads, duration, per_thread, start_at, out, path),
        )
        for _ in range(procs)
    ]
    for p in ps:
        p.start()
    parts = []
    give_up = time.monotonic() + duration + 45
    try:
        for _ in ps:
            parts.append(out.get(timeout=max(0.1, give_up - time.monotonic())))
    except queue.Empty:
        pass
    finally:
        for p in ps:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    ok = sum(p["ok"] for p in parts)
    errors = sum(p["errors"] for p in parts)
    errs = [p["error"] for p in parts if p["error"]]
    name = f"paced {rate:.0f}/s" if rate else f"max {path}"
    return RunResult(
        name,
        procs * threads,
        duration,
        ok + errors,
        ok,
        errors,
        [x for p in parts for x in p["lat"]],
        sum(p["cpu"] for p in parts),
        rate,
        errs[0] if errs else None,
        sum(p["missed"] for p in parts),
    )


# --------------------------------------------------------------------------------------------
# COPY baseline


def run_copy(url: str, rows: int) -> dict[str, Any]:
    """COPY `rows` events like the app's into the events table, time it, then delete them."""
    with psycopg.connect(**conn_kwargs(url)) as conn:
        project_id = conn.execute("SELECT min(id) FROM projects").fetchone()[0]  # type: ignore[index]
        users = [
            r[0] for r in conn.execute("SELECT id FROM users WHERE project_id = %s", (project_id,))
        ]
        if not users:  # the batched run normally created them
            conn.execute(
                "INSERT INTO users (project_id, external_id, attributes, created_at, updated_at)"
                " SELECT %s, 'c' || g, '{}', now(), now() FROM generate_series(1, 1000) g",
                (project_id,),
            )
            users = [r[0] for r in conn.execute("SELECT id FROM users")]
        max_id = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]  # type: ignore[index]
        conn.commit()
        now = datetime.now(UTC)
        rnd = random.Random()
        data = [
            (
                project_id,
                rnd.choice(users),
                "page_view",
                Jsonb(PROPERTIES),
                str(uuid.uuid4()),
                "api",
                now,
                now,
                False,
            )
            for _ in range(rows)
        ]
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY events ({COPY_COLUMNS}) FROM STDIN") as cp:
            for row in data:
                cp.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - t0
        deleted = conn.execute("DELETE FROM events WHERE id > %s", (max_id,)).rowcount
        conn.commit()
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
        "deleted": deleted,
    }


def analyze(url: str) -> None:
    """ANALYZE the ingestion tables, as autovacuum would (it may be off on a dev server)."""
    with psycopg.connect(**conn_kwargs(url), autocommit=True) as conn:
        conn.execute("ANALYZE users")
        conn.execute("ANALYZE events")


def autovacuum_setting(url: str) -> str:
    with psycopg.connect(**conn_kwargs(url)) as conn:
        return str(conn.execute("SHOW autovacuum").fetchone()[0])  # type: ignore[index]


def count_events(url: str) -> int:
    with psycopg.connect(**conn_kwargs(url)) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = harness.parser(__doc__, os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL), 170.0)
    p.add_argument("--batches", type=int, default=100, help="batches per batched run")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument(
        "--senders",
        default="2,4",
        help="concurrent batch senders, one run per comma-separated value",
    )
    p.add_argument("--single-seconds", type=float, default=12.0)
    p.add_argument("--single-procs", type=int, default=2, help="client processes (single/paced)")
    p.add_argument("--single-threads", type=int, default=4, help="connections per client process")
    p.add_argument("--paced-rate", type=float, default=2000.0, help="0 skips the paced run")
    p.add_argument("--paced-seconds", type=float, default=8.0)
    p.add_argument("--paced-threads", type=int, default=8, help="connections per process (paced)")
    p.add_argument(
        "--ceiling-seconds",
        type=float,
        default=4.0,
        help="GET /healthz closed loop (HTTP stack ceiling); 0 skips it",
    )
    p.add_argument("--workers", type=int, default=None, help="passed to cairn serve")
    p.add_argument("--threads", type=int, default=None, help="passed to cairn serve")
    p.add_argument(
        "--no-analyze",
        action="store_true",
        help="do not ANALYZE between phases (autovacuum's job; it may be off)",
    )
    return harness.parse(p, argv, QUICK)


def fmt_run(r: dict[str, Any]) -> str:
    line = (
        f"{r['events_per_s']:>9,.0f} events/s  p50 {r['p50_ms']:7.1f} ms  "
        f"p99 {r['p99_ms']:7.1f} ms  ({r['clients']} clients, {r['requests']} req, "
        f"{r['errors']} errors)"
    )
    cpu = r.get("cpu_cores")
    if cpu:
        line += (
            f"\n{'':8}cores used: server {cpu['server']:.2f}, postgres {cpu['postgres']:.2f}"
            f", bench client {cpu['client']:.2f}, other processes {cpu['other']:.2f}"
        )
    return line


def metered(meter: CpuMeter, phase: Callable[..., RunResult], *args: Any) -> dict[str, Any]:
    """Run one phase, `phase(*args)`, under the CPU meter: its summary with the cores used."""
    meter.start()
    run = phase(*args)
    r = run.summary()
    r["cpu_cores"] = meter.stop(client=run.client_cpu)
    return r


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = args.database_url
    check_database(url)
    deadline = Deadline(args.max_seconds)
    senders = [int(s) for s in str(args.senders).split(",") if s.strip()]
    result: dict[str, Any] = {
        "bench": "ingest",
        "database": make_url(url).database,
        "cpus": os.cpu_count(),
        "batch_size": args.batch_size,
        "loadavg_1m_at_start": os.getloadavg()[0],
    }
    instance_dir = tempfile.mkdtemp(prefix="cairn-bench-")
    server: Server | None = None
    with alarm(args.max_seconds):
        try:
            reset_database(url)
            server = start_server(url, instance_dir, args.workers, args.threads, timeout=45)
            key = server.secret_key
            # Warm every worker's connection pool and code paths (not counted).
            run_batched(server.port, key, make_batches(8, args.batch_size), max(senders), 20)
            result["autovacuum"] = autovacuum_setting(url)
            if not args.no_analyze:
                analyze(url)
            workers = server.proc.children()
            result["server"] = {
                "workers": len(workers),
                "threads": args.threads or 32,
                "port": server.port,
            }
            log(
                f"server up on {HOST}:{server.port}: {len(workers)} gunicorn workers "
                f"x {args.threads or 32} threads (pids {workers})"
            )

            meter = CpuMeter({"server": server.proc.pids, "postgres": lambda: backend_pids(url)})
            # /v1/track (or GET /healthz) from --single-procs client processes.
            clients = functools.partial(run_single, server.port, key, args.single_procs)
            result["batched"] = []
            for n in senders:
                budget = deadline.budget(35, reserve=60)
                if budget < 5:
                    log(f"skipping batched x{n}: out of time")
                    continue
                bodies = make_batches(args.batches, args.batch_size)
                log(
                    f"batched: {args.batches} x {args.batch_size} events, {n} senders "
                    f"(at most {budget:.0f} s)"
                )
                r = metered(meter, run_batched, server.port, key, bodies, n, budget)
                r["complete"] = r["requests"] == args.batches
                result["batched"].append(r)
                log("  " + fmt_run(r))
                if not args.no_analyze:
                    analyze(url)

            copy_rows = max((r["events"] for r in result["batched"]), default=0) or (
                args.batches * args.batch_size
            )
            log(f"copy: {copy_rows} rows with psycopg COPY")
            result["copy"] = run_copy(url, copy_rows)
            log(f"  {result['copy']['rows_per_s']:,.0f} rows/s")

            budget = deadline.budget(args.single_seconds, reserve=25)
            if budget >= 3:
                log(
                    f"single: /v1/track, {args.single_procs}x{args.single_threads} keep-alive "
                    f"clients, {budget:.0f} s"
                )
                r = metered(meter, clients, args.single_threads, budget, None)
                result["single"] = r
                log("  " + fmt_run(r))
            budget = deadline.budget(args.paced_seconds, reserve=12)
            if args.paced_rate and budget >= 3:
                log(
                    f"paced: /v1/track at {args.paced_rate:.0f}/s, "
                    f"{args.single_procs}x{args.paced_threads} clients, {budget:.0f} s"
                )
                r = metered(meter, clients, args.paced_threads, budget, args.paced_rate)
                r["achieved"] = r["events_per_s"] >= 0.95 * args.paced_rate
                result["paced"] = r
                log("  " + fmt_run(r))
            budget = deadline.budget(args.ceiling_seconds, reserve=8)
            if args.ceiling_seconds and budget >= 2:
                log(
                    f"ceiling: GET /healthz, {args.single_procs}x{args.single_threads} clients, "
                    f"{budget:.0f} s"
                )
                r = metered(meter, clients, args.single_threads, budget, None, "/healthz")
                result["healthz_ceiling"] = r
                log("  " + fmt_run(r).replace("events/s", "req/s   "))
            result["analyzed_between_phases"] = not args.no_analyze
            result["events_in_table"] = count_events(url)
        finally:
            if server is not None:
                errors = sum(log_problems(server.proc.output()).values())
                result["server_errors_logged"] = errors
                server.proc.stop(timeout=10)
                log(
                    f"server stopped (exit {server.proc.proc.returncode}); "
                    f"{errors} error lines in its log"
                )
                if errors:
                    print(server.proc.tail(), flush=True)
            shutil.rmtree(instance_dir, ignore_errors=True)

    report(result)
    emit(result, args.json_out)
    return 0


def report(result: dict[str, Any]) -> None:
    copy_rps = result.get("copy", {}).get("rows_per_s") or float("nan")
    batched = max(result.get("batched", []), key=lambda r: r["events_per_s"], default=None)
    single = result.get("single")
    paced = result.get("paced")
    srv = result.get("server", {})
    goals: dict[str, Any] = {}
    print("\n" + "=" * 78)
    print(
        f"INGEST BENCH SUMMARY  ({result.get('cpus')} CPUs, server: {srv.get('workers')} "
        f"gunicorn gthread workers x {srv.get('threads')} threads)"
    )
    print("-" * 78)
    runs = [*result.get("batched", []), single, paced]
    other = max((r.get("cpu_cores", {}).get("other", 0.0) for r in runs if r), default=0.0)
    if other > 0.3:
        print(
            f"WARNING: other processes on this machine used up to {other:.2f} cores during the "
            "run; the figures are pessimistic."
        )
    print(f"COPY baseline (psycopg COPY FROM STDIN): {copy_rps:>10,.0f} rows/s")
    for r in result.get("batched", []):
        print(f"batched /v1/events x{r['clients']} senders:  {fmt_run(r)}")
    if batched:
        ratio = batched["events_per_s"] / copy_rps
        ok = batched["events_per_s"] >= GOAL_BATCHED_EPS and ratio >= GOAL_BATCHED_RATIO
        goals["batched"] = ok
        batched["ratio_to_copy"] = round(ratio, 3)
        print(
            f"  best {batched['events_per_s']:,.0f} events/s, ratio to COPY {ratio:.3f}   "
            f"goal >= {GOAL_BATCHED_EPS:,} events/s and ratio >= {GOAL_BATCHED_RATIO}: "
            f"{verdict(ok)}"
        )
    if single:
        ratio = single["events_per_s"] / copy_rps
        single["ratio_to_copy"] = round(ratio, 4)
        ok = single["events_per_s"] >= GOAL_SINGLE_EPS and single["p99_ms"] <= GOAL_SINGLE_P99_MS
        goals["single"] = ok
        print(f"single /v1/track (max rate):  {fmt_run(single)}")
        print(
            f"  ratio to COPY {ratio:.4f}   goal >= {GOAL_SINGLE_EPS:,} events/s with p99 <= "
            f"{GOAL_SINGLE_P99_MS:.0f} ms: {verdict(ok)}"
        )
    if paced:
        ok = paced["achieved"] and paced["p99_ms"] <= GOAL_SINGLE_P99_MS
        goals["paced"] = ok
        print(f"paced /v1/track @ {paced['target_rate']:.0f}/s: {fmt_run(paced)}")
        print(
            f"  target rate {'achieved' if paced['achieved'] else 'NOT achieved'}; latency from "
            f"scheduled send; goal p99 <= {GOAL_SINGLE_P99_MS:.0f} ms at "
            f"{GOAL_SINGLE_EPS:,}/s: {verdict(ok)}"
        )
    ceiling = result.get("healthz_ceiling")
    if ceiling:
        print(f"context: GET /healthz (no DB): {fmt_run(ceiling).replace('events/s', 'req/s   ')}")
    print("=" * 78, flush=True)
    result["goals"] = {
        "batched_events_per_s": GOAL_BATCHED_EPS,
        "batched_ratio": GOAL_BATCHED_RATIO,
        "single_events_per_s": GOAL_SINGLE_EPS,
        "single_p99_ms": GOAL_SINGLE_P99_MS,
        "met": goals,
    }
    if batched:
        result["batched_best"] = batched


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchTimeout as err:
        sys.exit(f"aborted: {err}")
