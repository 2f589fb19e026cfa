"""Web push benchmark: 10K messages through the pipeline beside two raw loops, in one run.

Run with `.venv/bin/python bench/push.py [--database-url URL] [--redis-url URL]`.

It resets its own database (default `cairn_bench_push`) and flushes its own Redis database
(default db 6), creates a project, COPYs users with one push subscription each, and starts a
local push service (an aiohttp process, `--sink` mode of this script) that answers 201 to every
POST and, for one push in `--verify-every`, checks it as a browser's push service would (VAPID
JWT signature and claims, aes128gcm decryption with the subscriber's keys). Then, at the same
concurrency (`--processes` x `--threads`):

  pipeline  Cairn as deployed: `cairn serve` + `python -m dramatiq workers.actors` on Redis;
            `POST /v1/notify {broadcast, channels: [push]}` until every message is `sent`
  raw       baseline: `http_ece` aes128gcm encryption + POST with a pooled `requests.Session`
            and a VAPID header signed once (what a careful hand-written sender does); also
            `raw_urllib3`, the same POSTs through urllib3's pool (what the provider uses)
  naive     baseline: pywebpush's `webpush()` per message (re-signs the JWT, new connection)

and prints messages/s, the ratios, the goals (>= 4K msg/s, >= 0.7x raw, >= 10x naive) and the
CPU cores each part used. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import harness
import psycopg
import requests
from harness import HOST, PY, ROOT, BenchTimeout, CpuMeter, fmt_cpu, log, ratio, verdict

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/cairn_bench_push"
DEFAULT_REDIS = "redis://127.0.0.1:6379/6"
SUBJECT = "mailto:bench-ops@cairn-bench.io"
GOAL_PER_S = 4000
GOAL_RAW_RATIO = 0.7
GOAL_NAIVE_RATIO = 10.0
KEY_POOL = 64  # distinct subscriber key pairs, cycled over the subscriptions
QUICK = {"messages": 300, "naive_messages": 100, "processes": 1, "threads": 2}
PAYLOAD = {"title": "Spring sale", "body": "Everything in the shop is 20% off until Sunday."}

sys.path.insert(0, str(ROOT))


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --------------------------------------------------------------------------------------------
# The push service (`--sink`): 201 to everything, a sample verified like a real service


def run_sink(port: int, keys_file: str) -> None:
    """Serve until killed; `GET /stats` answers the counts."""
    import asyncio

    import http_ece
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.support.push_service import PushService

    keys = json.loads(Path(keys_file).read_text())
    subscribers = {
        int(i): (ec.derive_private_key(int(k["d"]), ec.SECP256R1()), base64.b64decode(k["auth"]))
        for i, k in enumerate(keys["subscribers"])
    }
    verify_every = int(keys["verify_every"])
    origin = f"http://{HOST}:{port}"
    checker = PushService.__new__(PushService)  # only its JWT check; no server of its own
    checker.origin = origin
    stats = {"posts": 0, "verified": 0, "bad": 0, "errors": []}

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        stats["posts"] += 1
        if verify_every and stats["posts"] % verify_every == 0:
            try:
                checker._verify_vapid(request.headers.get("Authorization", ""))
                slot = int(request.match_info["token"].split("-")[1]) % KEY_POOL
                private, auth = subscribers[slot]
                plain = http_ece.decrypt(
                    body, private_key=private, auth_secret=auth, version="aes128gcm"
                )
                shown = json.loads(plain)
                assert shown["title"] and request.headers["TTL"].isdigit()
                stats["verified"] += 1
            except Exception as err:
                stats["bad"] += 1
                if len(stats["errors"]) < 5:
                    stats["errors"].append(repr(err))
                return web.Response(status=400, text=repr(err))
        return web.Response(status=201, headers={"Location": f"{origin}/m/{stats['posts']}"})

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=8192)
    app.router.add_post("/push/{token}", push)
    app.router.add_get("/stats", get_stats)
    asyncio.run(_serve(web, app, port))


async def _serve(web: Any, app: Any, port: int) -> None:
    import asyncio

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=1024).start()
    print("sink ready", flush=True)
    await asyncio.Event().wait()


def sink_stats(url: str) -> dict[str, Any]:
    """The sink's counters."""
    out: dict[str, Any] = requests.get(url + "/stats", timeout=10).json()
    return out


# --------------------------------------------------------------------------------------------
# Setup


def subscriber_keys(n: int) -> list[dict[str, Any]]:
    """`n` browser key pairs: private scalar (for the sink), p256dh and auth (for Cairn)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = []
    for _ in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        out.append(
            {
                "d": str(key.private_numbers().private_value),
                "auth": base64.b64encode(auth).decode(),
                "p256dh": b64url(point),
                "auth_b64url": b64url(auth),
            }
        )
    return out


def load_devices(
    db: psycopg.Connection, project_id: int, n: int, sink: str, keys: list[dict[str, Any]]
) -> float:
    """`n` users, one push subscription each (signed with the project's VAPID key)."""
    t = time.perf_counter()
    harness.copy_users(db, project_id, n)
    [key_id] = db.execute(
        "SELECT id FROM vapid_keys WHERE project_id = %s ORDER BY id DESC LIMIT 1", (project_id,)
    ).fetchone()
    users = db.execute(
        "SELECT id FROM users WHERE project_id = %s ORDER BY id", (project_id,)
    ).fetchall()
    with (
        db.cursor() as cur,
        cur.copy(
            "COPY push_subscriptions (project_id, user_id, vapid_key_id, endpoint, p256dh, auth,"
            " topics, active, failures, created_at, updated_at) FROM STDIN"
        ) as copy,
    ):
        for i, (user_id,) in enumerate(users):
            k = keys[i % KEY_POOL]
            copy.write(
                f"{project_id}\t{user_id}\t{key_id}\t{sink}/push/d-{i}\t{k['p256dh']}\t"
                f"{k['auth_b64url']}\t[]\ttrue\t0\tnow\tnow\n"
            )
    db.commit()
    db.execute("ANALYZE users")
    db.execute("ANALYZE push_subscriptions")
    db.commit()
    return time.perf_counter() - t


def vapid_pair(db: psycopg.Connection, project_id: int) -> tuple[str, str]:
    """(public, private) of the project's key, base64url."""
    row = db.execute(
        "SELECT public_key, private_key FROM vapid_keys WHERE project_id = %s"
        " ORDER BY id DESC LIMIT 1",
        (project_id,),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


# --------------------------------------------------------------------------------------------
# Baselines: the same messages by hand, same processes x threads


def _raw_share(args: tuple[str, str, str, list[dict[str, Any]], list[int], int, str]) -> int:
    """One process of a baseline: `threads` threads sending its share; returns how many.

    `mode`: `naive` (pywebpush's webpush()), `requests` (http_ece + a pooled requests.Session)
    or `urllib3` (http_ece + urllib3's pool, what the provider uses)."""
    sink, public, private, keys, indexes, threads, mode = args
    import http_ece
    import urllib3
    from cryptography.hazmat.primitives.asymmetric import ec
    from pywebpush import webpush

    from workers.channels.providers.webpush import VapidHeaders

    payload = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    header = VapidHeaders().header(
        private_key=private, public_key=public, origin=sink, subject=SUBJECT
    )
    session = requests.Session()
    session.mount(sink, requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads))
    pool = urllib3.connection_from_url(sink, maxsize=threads, retries=False)
    pem_key = private  # pywebpush's Vapid.from_string takes the raw base64url scalar
    sent = [0] * threads

    def run(slot: int) -> None:
        for i in indexes[slot::threads]:
            k = keys[i % KEY_POOL]
            endpoint = f"{sink}/push/d-{i}"
            if mode == "naive":
                webpush(
                    {
                        "endpoint": endpoint,
                        "keys": {"p256dh": k["p256dh"], "auth": k["auth_b64url"]},
                    },
                    data=payload.decode(),
                    vapid_private_key=pem_key,
                    vapid_claims={"sub": SUBJECT},
                    ttl=2419200,
                )
            else:
                receiver = base64.urlsafe_b64decode(k["p256dh"] + "==")
                auth = base64.urlsafe_b64decode(k["auth_b64url"] + "==")
                body = http_ece.encrypt(
                    payload,
                    private_key=ec.generate_private_key(ec.SECP256R1()),
                    dh=receiver,
                    auth_secret=auth,
                    version="aes128gcm",
                )
                headers = {
                    "Authorization": header,
                    "Content-Encoding": "aes128gcm",
                    "Content-Type": "application/octet-stream",
                    "TTL": "2419200",
                }
                if mode == "requests":
                    code = session.post(
                        endpoint, data=body, headers=headers, timeout=30
                    ).status_code
                else:
                    code = pool.urlopen("POST", f"/push/d-{i}", body=body, headers=headers).status
                if code != 201:
                    raise RuntimeError(f"sink answered {code}")
            sent[slot] += 1

    running = [threading.Thread(target=run, args=(s,)) for s in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    return sum(sent)


def baseline(
    name: str,
    *,
    sink: str,
    vapid: tuple[str, str],
    keys: list[dict[str, Any]],
    n: int,
    processes: int,
    threads: int,
    mode: str,
    cpu: CpuMeter,
) -> dict[str, Any]:
    """Send `n` messages with the hand-written loop; messages/s and CPU."""
    shares = [list(range(p, n, processes)) for p in range(processes)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        cpu.start()  # the pool's processes exist now: their CPU counts as the bench's
        t = time.perf_counter()
        counts = pool.map(
            _raw_share,
            [(sink, vapid[0], vapid[1], keys, s, threads, mode) for s in shares],
        )
        took = time.perf_counter() - t
        used = cpu.stop()
    out = {
        "messages": sum(counts),
        "seconds": round(took, 3),
        "per_s": round(sum(counts) / took, 1),
        "cpu": used,
    }
    log(f"{name}: {out['messages']} in {out['seconds']}s = {out['per_s']}/s; {fmt_cpu(used)}")
    return out


# --------------------------------------------------------------------------------------------
# The pipeline


def pipeline(
    api: str, sk: str, db: psycopg.Connection, n: int, cpu: CpuMeter, budget: float
) -> dict[str, Any]:
    """POST a push broadcast, wait until all `n` messages are final; messages/s."""
    cpu.start()
    t0 = time.perf_counter()
    send_id = harness.post_notify(api, sk, {"broadcast": True, "channels": ["push"], **PAYLOAD})
    counts, _ = harness.wait_final(db, send_id, n, budget, started=t0, poll=0.2)
    took = time.perf_counter() - t0
    used = cpu.stop()
    first, last = db.execute(
        "SELECT min(sent_at), max(sent_at) FROM messages WHERE send_id = %s AND status = 'sent'",
        (send_id,),
    ).fetchone()
    db.commit()
    sent = counts.get("sent", 0)
    window = (last - first).total_seconds() if first and last else None
    out = {
        "send_id": send_id,
        "statuses": counts,
        "sent": sent,
        "seconds_from_post": round(took, 3),
        "per_s_from_post": round(sent / took, 1),
        "sent_window_s": round(window, 3) if window else None,
        "per_s": round(sent / window, 1) if window else None,
        "cpu": used,
    }
    log(
        f"pipeline: {sent}/{n} sent in {out['seconds_from_post']}s from the POST"
        f" ({out['per_s_from_post']}/s; {out['per_s']}/s first to last send); {fmt_cpu(used)}"
    )
    return out


# --------------------------------------------------------------------------------------------


# The baselines, in the order they run: result key, label, which loop, and whether they send
# `--naive-messages` (the slow loop) rather than `--messages`.
BASELINES = (
    ("raw", "raw http_ece + pooled requests.Session POST", "requests", False),
    ("raw_urllib3", "raw http_ece + urllib3 pool POST", "urllib3", False),
    ("naive", "naive webpush()", "naive", True),
)


def main() -> int:
    ap = harness.app_parser(__doc__, DEFAULT_URL, DEFAULT_REDIS, 240.0)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--naive-messages", type=int, default=2000, help="the slow loop sends fewer")
    ap.add_argument("--verify-every", type=int, default=50, help="the sink checks 1 push in N")
    ap.add_argument("--sink", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sink-keys", default=None, help=argparse.SUPPRESS)
    args = harness.parse(ap, None, QUICK)
    if args.sink is not None:
        run_sink(args.sink, args.sink_keys)
        return 0
    rc = 0
    with harness.app_run(
        args,
        "cairn-bench-push-",
        {"messages": args.messages},
        VAPID_SUBJECT=SUBJECT,
        ALLOW_PRIVATE_ENDPOINTS="1",
    ) as run:
        results, env = run.results, run.env
        try:
            creds = run.setup_project()
            project_id, sk = creds["id"], creds["secretKey"]
            harness.run_cairn(env, "vapid", "generate", "--project", str(project_id), timeout=60)

            keys = subscriber_keys(KEY_POOL)
            keys_file = run.tmp / "subscribers.json"
            keys_file.write_text(
                json.dumps({"subscribers": keys, "verify_every": args.verify_every})
            )
            port = harness.free_port()
            sink_url = f"http://{HOST}:{port}"
            sink = run.start(
                "sink",
                [PY, str(Path(__file__)), "--sink", str(port), "--sink-keys", str(keys_file)],
                dict(env, PYTHONPATH=str(ROOT)),
            )
            sink.wait_for_line(lambda line: "sink ready" in line, 30)

            db = psycopg.connect(**harness.conn_kwargs(args.database_url))
            took = load_devices(db, project_id, args.messages, sink_url, keys)
            log(f"setup: project {project_id}, {args.messages} users with a device in {took:.2f}s")
            vapid = vapid_pair(db, project_id)
            db.commit()

            # ---- baselines first (the pipeline's processes are not running yet)
            for key, label, mode, naive in BASELINES:
                results[key] = baseline(
                    label,
                    sink=sink_url,
                    vapid=vapid,
                    keys=keys,
                    n=args.naive_messages if naive else args.messages,
                    processes=args.processes,
                    threads=args.threads,
                    mode=mode,
                    cpu=harness.app_meter({"sink": sink}),
                )

            # ---- the pipeline
            app = run.start_app()
            budget = args.max_seconds - (time.monotonic() - run.started) - 10
            results["pipeline"] = pipeline(
                app.api,
                sk,
                db,
                args.messages,
                harness.app_meter({"serve": app.serve, "workers": app.workers, "sink": sink}),
                budget,
            )
            results["sink"] = sink_stats(sink_url)
            results["problems"] = {
                p.name: harness.log_problems(p.output()) for p in (app.serve, app.workers, sink)
            }
        except (BenchTimeout, KeyboardInterrupt, RuntimeError) as err:
            log(f"stopped: {err!r}")
            rc = 1
    summary(results)
    harness.emit(results, args.json_out)
    return rc


def summary(r: dict[str, Any]) -> None:
    """The figures beside their goals."""
    pipe = (r.get("pipeline") or {}).get("per_s")
    raw = (r.get("raw") or {}).get("per_s")
    naive = (r.get("naive") or {}).get("per_s")
    r["ratio_to_raw"] = ratio(pipe, raw)
    r["ratio_to_raw_urllib3"] = ratio(pipe, (r.get("raw_urllib3") or {}).get("per_s"))
    r["ratio_to_naive"] = ratio(pipe, naive)
    r["goals"] = {
        "per_s": verdict(None if pipe is None else pipe >= GOAL_PER_S),
        "ratio_to_raw": verdict(
            None if r["ratio_to_raw"] is None else r["ratio_to_raw"] >= GOAL_RAW_RATIO
        ),
        "ratio_to_naive": verdict(
            None if r["ratio_to_naive"] is None else r["ratio_to_naive"] >= GOAL_NAIVE_RATIO
        ),
    }
    print("\n=== web push: messages/s ===")
    print(f"pipeline {pipe}/s (goal >= {GOAL_PER_S}: {r['goals']['per_s']})")
    print(
        f"raw encrypt + pooled POST {raw}/s; pipeline/raw = {r['ratio_to_raw']}"
        f" (goal >= {GOAL_RAW_RATIO}: {r['goals']['ratio_to_raw']})"
    )
    print(
        f"raw encrypt + urllib3 pool POST {(r.get('raw_urllib3') or {}).get('per_s')}/s;"
        f" pipeline/raw_urllib3 = {r['ratio_to_raw_urllib3']}"
    )
    print(
        f"naive webpush() {naive}/s; pipeline/naive = {r['ratio_to_naive']}"
        f" (goal >= {GOAL_NAIVE_RATIO}: {r['goals']['ratio_to_naive']})"
    )
    sink = r.get("sink") or {}
    print(
        f"sink: {sink.get('posts')} POSTs, {sink.get('verified')} verified, {sink.get('bad')} bad"
    )


if __name__ == "__main__":
    sys.exit(main())
