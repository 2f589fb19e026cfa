"""Trigger benchmark: event → rule → triggered campaign → message, latency and throughput.

Run with `.venv/bin/python bench/trigger.py [--database-url URL] [--redis-url URL]`.

It resets its own database (default `cairn_bench_trigger`) and flushes its own Redis database
(default db 7), runs Cairn as deployed with a Redis broker (`cairn serve` + `python -m dramatiq
workers.actors`), defines 20 rules (`e<i>` → add to audience `a<i>`) and 20 triggered campaigns
(`e<i>` → in-app + web push, template `t<i>`), and measures:

  noop        baseline: a no-op Dramatiq actor (bench/noop_actor.py) on the same Redis, one
              worker process x --threads: jobs/s
  saturation  --events events (`e<i>`, each firing one rule and one campaign, to users without
              a push device) posted in batches while no worker runs; then one worker process
              starts: events processed/s (processed_at set) per worker process, and the same
              for events no rule or campaign listens to
  latency     --rate events/s for --seconds to --stream-users users, each with an open in-app
              SSE stream and a push device at a local push service (which decrypts every push
              with the subscriber's keys, as a browser's service would): latency from the
              POST /v1/events to the in-app frame and to the push arriving, p50/p99

The goals from the issue: p50 ≤ 100 ms, p99 ≤ 500 ms; ≥ 1K events/s per worker process. The
last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
import psycopg
import requests
from harness import HOST, PY, ROOT, BenchTimeout, SseReader, fmt_cpu, log, pct, ratio, verdict

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/cairn_bench_trigger"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
SUBJECT = "mailto:bench-ops@cairn-bench.io"
RULES = 20
GOAL_P50_MS = 100.0
GOAL_P99_MS = 500.0
GOAL_PER_PROCESS = 1000.0
QUICK = {
    "events": 300,
    "quiet_events": 300,
    "seconds": 3,
    "rate": 20.0,
    "stream_users": 5,
    "noop_jobs": 200,
}

sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------------------------
# The push service (`--sink` mode): decrypts every push, records when each token arrived


def run_sink(port: int, keys_file: str) -> None:
    """Serve until killed; `GET /arrivals` answers {token: unix time of arrival}."""
    import asyncio

    import http_ece
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric import ec

    keys = json.loads(Path(keys_file).read_text())
    subscribers = {
        name: (ec.derive_private_key(int(k["d"]), ec.SECP256R1()), base64.b64decode(k["auth"]))
        for name, k in keys.items()
    }
    arrivals: dict[str, float] = {}
    errors: list[str] = []

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        at = time.time()
        try:
            private, auth = subscribers[request.match_info["token"]]
            plain = http_ece.decrypt(
                body, private_key=private, auth_secret=auth, version="aes128gcm"
            )
            arrivals.setdefault(json.loads(plain)["body"], at)
        except Exception as err:
            if len(errors) < 5:
                errors.append(repr(err))
            return web.Response(status=400, text=repr(err))
        return web.Response(status=201)

    async def get_arrivals(_: web.Request) -> web.Response:
        return web.json_response({"arrivals": arrivals, "errors": errors})

    app = web.Application(client_max_size=8192)
    app.router.add_post("/push/{token}", push)
    app.router.add_get("/arrivals", get_arrivals)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=1024).start()
        print("sink ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


# --------------------------------------------------------------------------------------------
# Setup through the API


class Api:
    """The REST API with the secret key; every call must answer 2xx."""

    def __init__(self, base: str, sk: str) -> None:
        self.base = base
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {sk}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.s.request(method, self.base + path, json=body, timeout=60)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None


def define_automation(api: Api) -> None:
    """20 templates, audiences, rules and active triggered campaigns (e<i> → a<i>, t<i>)."""
    for i in range(RULES):
        api.call(
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
        api.call("POST", "/v1/audiences", {"name": f"a{i}"})
        api.call(
            "POST",
            "/v1/rules",
            {
                "name": f"r{i}",
                "when": {"event": f"e{i}", "where": "src:bench"},
                "then": [{"addToAudience": f"a{i}", "ttlSeconds": 3600}],
            },
        )
        campaign = api.call(
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
        api.call("POST", f"/v1/campaigns/{campaign['id']}/activate")


def stream_devices(
    db: psycopg.Connection, project_id: int, names: list[str], sink: str
) -> dict[str, dict[str, Any]]:
    """One push subscription per named user (created here), with the keys the sink decrypts
    with: {device token: subscriber keys}."""
    from push import KEY_POOL, subscriber_keys

    keys = subscriber_keys(min(len(names), KEY_POOL))
    [key_id] = db.execute(
        "SELECT id FROM vapid_keys WHERE project_id = %s ORDER BY id DESC LIMIT 1", (project_id,)
    ).fetchone()
    out = {}
    for i, name in enumerate(names):
        [user_id] = db.execute(
            "INSERT INTO users (project_id, external_id, attributes, created_at, updated_at)"
            " VALUES (%s, %s, '{}', now(), now()) RETURNING id",
            (project_id, name),
        ).fetchone()
        k = keys[i % len(keys)]
        token = f"d-{name}"
        db.execute(
            "INSERT INTO push_subscriptions (project_id, user_id, vapid_key_id, endpoint, p256dh,"
            " auth, topics, active, failures, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, '[]', true, 0, now(), now())",
            (project_id, user_id, key_id, f"{sink}/push/{token}", k["p256dh"], k["auth_b64url"]),
        )
        out[token] = k
    db.commit()
    return out


# --------------------------------------------------------------------------------------------
# Saturation: a backlog of events, then one worker process


def pending(db: psycopg.Connection, project_id: int) -> int:
    """Events not processed yet."""
    [n] = db.execute(
        "SELECT count(*) FROM events WHERE project_id = %s AND processed_at IS NULL",
        (project_id,),
    ).fetchone()
    db.commit()
    return int(n)


def post_backlog(base: str, sk: str, events: list[dict[str, Any]]) -> None:
    """POST the events in batches of 500 from 4 threads."""
    batches = [events[i : i + 500] for i in range(0, len(events), 500)]

    def one(batch: list[dict[str, Any]]) -> None:
        r = requests.post(
            base + "/v1/events",
            json=batch,
            headers={"Authorization": f"Bearer {sk}"},
            timeout=120,
        )
        if r.status_code != 202:
            raise RuntimeError(f"POST /v1/events: {r.status_code} {r.text[:300]}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, batches))


def saturation(
    run: harness.AppRun,
    db: psycopg.Connection,
    project_id: int,
    base: str,
    sk: str,
    label: str,
    events: list[dict[str, Any]],
    threads: int,
    timeout: float,
) -> dict[str, Any]:
    """Events processed/s by one worker process starting on a backlog of `events`."""
    post_backlog(base, sk, events)
    backlog = pending(db, project_id)
    workers = run.start("workers-" + label, harness.dramatiq_command("workers.actors", 1, threads))
    cpu = harness.app_meter({"workers": workers})
    harness.wait_workers_ready(workers, 1, 60)
    a = cpu.snap()
    t0 = time.perf_counter()
    left = backlog
    deadline = time.monotonic() + timeout
    while left > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        left = pending(db, project_id)
    took = time.perf_counter() - t0
    used = cpu.cores(a, cpu.snap())
    workers.stop()
    run.procs.remove(workers)
    done = backlog - left
    if left:
        # Not drained in time: mark the rest done so the next phase starts on an empty
        # backlog (their queued jobs then find nothing to do).
        db.execute(
            "UPDATE events SET processed_at = now() WHERE project_id = %s AND processed_at IS NULL",
            (project_id,),
        )
        db.commit()
    out = {
        "events": backlog,
        "processed": done,
        "drained": left == 0,
        "seconds": round(took, 2),
        "per_s": round(done / took, 1) if took else None,
        "cpu": used,
    }
    log(
        f"saturation {label}: {done}/{backlog} events in {took:.2f}s = {out['per_s']}/s; "
        f"{fmt_cpu(used)}"
    )
    return out


# --------------------------------------------------------------------------------------------
# Latency at a steady rate


def frame_body(line: bytes) -> str | None:
    """A frame's message body (the event's token), from its `data:` line."""
    return (json.loads(line[6:]).get("body") or None) if line.startswith(b"data: ") else None


def latency(
    port: int, creds: dict[str, Any], names: list[str], sink: str, rate: float, seconds: float
) -> dict[str, Any]:
    """Events at `rate`/s round-robin over `names`; POST → in-app frame and → push arrival."""
    base = f"http://{HOST}:{port}"
    readers = []
    for name in names:
        uhash = hmac.new(
            creds["identitySecret"].encode(), name.encode(), hashlib.sha256
        ).hexdigest()
        path = "/v1/inbox/stream?" + urllib.parse.urlencode(
            {"key": creds["publishableKey"], "userId": name, "userHash": uhash}
        )
        reader = SseReader(port, path, frame_body, clock=time.time)
        reader.start()
        readers.append(reader)
    for reader in readers:
        if not reader.connected.wait(20) or reader.error:
            raise RuntimeError(f"SSE stream did not connect: {reader.error}")
    n = int(rate * seconds)
    posted: dict[str, float] = {}
    errors: list[str] = []
    lock = threading.Lock()
    local = threading.local()

    def one(i: int, due: float) -> None:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            s.headers["Authorization"] = f"Bearer {creds['secretKey']}"
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        token = f"k{i}"
        event = {
            "name": f"e{i % RULES}",
            "userId": names[i % len(names)],
            "properties": {"token": token, "src": "bench"},
        }
        t = time.time()
        try:
            r = s.post(base + "/v1/events", json=event, timeout=10)
            if r.status_code != 202:
                raise RuntimeError(f"{r.status_code} {r.text[:200]}")
            with lock:
                posted[token] = t
        except Exception as err:
            with lock:
                errors.append(str(err))

    start = time.perf_counter() + 0.1
    with ThreadPoolExecutor(16) as pool:
        for i in range(n):
            pool.submit(one, i, start + i / rate)
    span = time.perf_counter() - start
    deadline = time.monotonic() + 20
    push: dict[str, float] = {}
    while time.monotonic() < deadline:
        inapp = {t for r in readers for t in r.arrivals}
        push = requests.get(sink + "/arrivals", timeout=10).json()["arrivals"]
        if set(posted) <= inapp and set(posted) <= set(push):
            break
        time.sleep(0.25)
    for reader in readers:
        reader.stop()
    inapp_at = {t: at for r in readers for t, at in r.arrivals.items()}
    lat_inapp = [inapp_at[t] - at for t, at in posted.items() if t in inapp_at]
    lat_push = [push[t] - at for t, at in posted.items() if t in push]

    def figures(values: list[float]) -> dict[str, Any]:
        return {
            "received": len(values),
            "p50_ms": round(pct(values, 50), 1) if values else None,
            "p99_ms": round(pct(values, 99), 1) if values else None,
            "max_ms": round(pct(values, 100), 1) if values else None,
        }

    return {
        "events": n,
        "accepted": len(posted),
        "errors": len(errors),
        "error_sample": errors[:3],
        "rate": round(len(posted) / span, 1),
        "inapp": figures(lat_inapp),
        "push": figures(lat_push),
    }


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = harness.app_parser(__doc__, DEFAULT_URL, DEFAULT_REDIS, 400.0)
    ap.add_argument(
        "--events", type=int, default=3000, help="saturation backlog of events that fire"
    )
    ap.add_argument(
        "--quiet-events", type=int, default=20_000, help="saturation backlog nothing listens to"
    )
    ap.add_argument("--noop-jobs", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=200.0, help="latency: events per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="latency: how long")
    ap.add_argument("--stream-users", type=int, default=40, help="latency: SSE streams open")
    ap.add_argument(
        "--worker-timeout-ms",
        type=int,
        default=None,
        help="set dramatiq_worker_timeout for the app's workers (caps an idle Redis consumer's"
        " poll backoff; Dramatiq's default is 1000)",
    )
    ap.add_argument("--sink", type=int, default=None, help=argparse_suppress())
    ap.add_argument("--sink-keys", default=None, help=argparse_suppress())
    args = harness.parse(ap, None, QUICK)
    if args.sink is not None:
        run_sink(args.sink, args.sink_keys)
        return 0
    rc = 0
    sizes = {"events": args.events, "rate": args.rate, "seconds": args.seconds}
    with harness.app_run(
        args,
        "cairn-bench-trigger-",
        sizes,
        True,
        VAPID_SUBJECT=SUBJECT,
        ALLOW_PRIVATE_ENDPOINTS="1",
    ) as run:
        results, env = run.results, run.env
        try:
            creds = run.setup_project()
            project_id, sk = creds["id"], creds["secretKey"]
            harness.run_cairn(env, "vapid", "generate", "--project", str(project_id), timeout=60)
            port = harness.free_port()
            serve = run.start(
                "serve", [harness.cairn_command(), "serve", "--host", HOST, "--port", str(port)]
            )
            base = f"http://{HOST}:{port}"
            serve.wait_http_ok(base + "/healthz", 60)
            api = Api(base, sk)
            define_automation(api)

            db = psycopg.connect(**harness.conn_kwargs(args.database_url))
            names = [f"s{i}" for i in range(args.stream_users)]
            sink_port = harness.free_port()
            sink_url = f"http://{HOST}:{sink_port}"
            devices = stream_devices(db, project_id, names, sink_url)
            keys_file = run.tmp / "devices.json"
            keys_file.write_text(json.dumps(devices))
            sink = run.start(
                "sink",
                [PY, str(Path(__file__)), "--sink", str(sink_port), "--sink-keys", str(keys_file)],
                dict(env, PYTHONPATH=str(ROOT)),
            )
            sink.wait_for_line(lambda line: "sink ready" in line, 30)
            log(f"setup: {RULES} rules and campaigns, {len(names)} stream users with a device")

            # ---- baseline: a no-op actor, one process
            from fanout import noop_baseline

            noop = noop_baseline(
                env, run.logdir, args.redis_url, args.noop_jobs, 1, args.threads, run.procs
            )
            results["noop"] = noop
            log(f"noop: {noop['jobs_per_s']} jobs/s (one process); {fmt_cpu(noop['cpu'])}")

            # ---- saturation, one worker process
            users = max(args.events // 10, 1)
            firing = [
                {
                    "name": f"e{i % RULES}",
                    "userId": f"u{i % users}",
                    "properties": {"token": f"b{i}", "src": "bench"},
                }
                for i in range(args.events)
            ]
            budget = max(args.max_seconds / 4, 30)
            results["saturation"] = saturation(
                run, db, project_id, base, sk, "firing", firing, args.threads, budget
            )
            quiet = [
                {"name": "page_view", "userId": f"u{i % users}", "properties": {"n": i}}
                for i in range(args.quiet_events)
            ]
            results["saturation_no_listener"] = saturation(
                run, db, project_id, base, sk, "quiet", quiet, args.threads, budget
            )

            # ---- latency at a steady rate, --processes workers
            workers = run.start(
                "workers",
                harness.dramatiq_command("workers.actors", args.processes, args.threads),
            )
            harness.wait_workers_ready(workers, args.processes, 60)
            cpu = harness.app_meter({"serve": serve, "workers": workers, "sink": sink})
            a = cpu.snap()
            lat = latency(port, creds, names, sink_url, args.rate, args.seconds)
            lat["cpu"] = cpu.cores(a, cpu.snap())
            lat["stages"] = stages(db, project_id, lat["events"])
            results["latency"] = lat
            log(f"latency: {json.dumps(lat)}")
            results["problems"] = {
                p.name: harness.log_problems(p.output()) for p in (serve, workers, sink)
            }
        except (BenchTimeout, KeyboardInterrupt, RuntimeError) as err:
            log(f"stopped: {err!r}")
            rc = 1
    summary(results)
    harness.emit(results, args.json_out)
    return rc


def stages(db: psycopg.Connection, project_id: int, n: int) -> dict[str, Any]:
    """Where the latency phase's time went, from the rows: received → processed (the event
    waited for its job), a message's created → claimed (waited for delivery), claimed → sent
    (load, send, record); p50/p99 in ms, and events per processing transaction."""
    out: dict[str, Any] = {}
    [first, txns] = db.execute(
        "SELECT min(received_at), count(DISTINCT processed_at) FROM (SELECT * FROM events"
        " WHERE project_id = %s AND properties->>'token' IS NOT NULL ORDER BY id DESC LIMIT %s) e",
        (project_id, n),
    ).fetchone()
    if first is None:
        return out
    queries = {
        "event_wait": "SELECT extract(epoch FROM processed_at - received_at) FROM events"
        " WHERE project_id = %s AND received_at >= %s AND properties->>'token' IS NOT NULL",
        "claim_wait": "SELECT extract(epoch FROM claimed_at - created_at) FROM messages"
        " WHERE project_id = %s AND created_at >= %s",
        "claimed_to_sent": "SELECT extract(epoch FROM sent_at - claimed_at) FROM messages"
        " WHERE project_id = %s AND created_at >= %s",
    }
    for name, sql in queries.items():
        values = [float(v) for (v,) in db.execute(sql, (project_id, first)) if v is not None]
        if values:
            out[name] = {"p50_ms": round(pct(values, 50), 1), "p99_ms": round(pct(values, 99), 1)}
    out["events_per_transaction"] = round(n / txns, 1) if txns else None
    return out


def argparse_suppress() -> str:
    """Hidden options (the sink's)."""
    import argparse

    return argparse.SUPPRESS


def summary(r: dict[str, Any]) -> None:
    """The figures beside their baselines and goals."""
    sat, noop, lat = r.get("saturation") or {}, r.get("noop") or {}, r.get("latency") or {}
    per_s, noop_rate = sat.get("per_s"), noop.get("jobs_per_s")
    met = per_s >= GOAL_PER_PROCESS if per_s else None
    print("\n== trigger benchmark ==")
    print(
        f"events processed per worker process (each firing a rule and a campaign): {per_s}/s;"
        f" no listener: {(r.get('saturation_no_listener') or {}).get('per_s')}/s;"
        f" no-op actor {noop_rate} jobs/s (ratio {ratio(per_s, noop_rate)})"
        f" — goal ≥{GOAL_PER_PROCESS:.0f}/s: {verdict(met)}"
    )
    if lat.get("stages"):
        print(f"stages: {json.dumps(lat['stages'])}")
    for leg in ("inapp", "push"):
        f = lat.get(leg) or {}
        met = (
            f["p50_ms"] <= GOAL_P50_MS and f["p99_ms"] <= GOAL_P99_MS
            if f.get("p50_ms") is not None
            else None
        )
        print(
            f"POST /v1/events → {leg}: {f.get('received')}/{lat.get('accepted')} received,"
            f" p50 {f.get('p50_ms')} ms, p99 {f.get('p99_ms')} ms at {lat.get('rate')} events/s"
            f" — goal p50 ≤{GOAL_P50_MS:.0f} ms, p99 ≤{GOAL_P99_MS:.0f} ms: {verdict(met)}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
