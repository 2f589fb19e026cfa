"""Email benchmark: N emails through the pipeline to a local SMTP server, beside a raw smtplib loop.

(Named `mail.py`, not `email.py`: run as a script, `bench/` comes first on sys.path and an
`email.py` there would shadow the standard library's `email` package.)

Run with `.venv/bin/python bench/mail.py [--database-url URL] [--redis-url URL] [--emails N]`.

It resets its own database (default `cairn_bench_email`; never point it at data you keep) and
flushes its own Redis database (default db 6), starts an aiosmtpd server in a process of its
own (it accepts and counts, keeping nothing), and measures:

  raw       baseline: one smtplib connection in this process sending N multipart text+HTML
            messages (built per message with EmailMessage, like the provider) one after the
            other: messages/s
  pipeline  `cairn serve` (API only) + `python -m dramatiq workers.actors --processes 2
            --threads 8` with SMTP_URL pointing at the server: POST /v1/notify {broadcast,
            email} to N users with an address, until every message is `sent`: messages/s
            (fan-out included), and the ratio to the raw loop

Every figure is in the JSON object printed last. The run ends by itself after --max-seconds
(default 200) and stops every process group it started.
"""

from __future__ import annotations

import argparse
import json
import signal
import smtplib
import sys
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import harness
import psycopg
from harness import HOST, PY, fmt_cpu, log, ratio

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/cairn_bench_email"
DEFAULT_REDIS = "redis://127.0.0.1:6379/6"
QUICK = {"emails": 200, "processes": 1, "threads": 2}
HTML = (
    "<html><body><h1>Spring sale</h1><p>Everything is 20% off this week. "
    '<a href="https://shop.bench-mail.com/sale?from=email">Shop now</a></p>'
    "<p>You get this email because you signed up at bench-mail.com.</p></body></html>"
)


# --------------------------------------------------------------------------------------------
# The SMTP server (its own process: `bench/mail.py --sink-port N`)


def run_sink(port: int) -> None:
    """Accept every message and count them; print the count on SIGTERM."""
    from aiosmtpd.controller import Controller

    class Counting:
        received = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Counting.received += 1
            return "250 OK"

    controller = Controller(Counting(), hostname=HOST, port=port)
    controller.start()
    print(f"sink ready on {port}", flush=True)
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        time.sleep(0.2)
    controller.stop()
    print(f"sink received {Counting.received}", flush=True)


# --------------------------------------------------------------------------------------------
# Phases


def build(n: int) -> EmailMessage:
    """One message as the provider builds it (multipart/alternative, the usual headers)."""
    msg = EmailMessage()
    msg["From"] = "Bench <news@bench-mail.com>"
    msg["To"] = f"u{n}@bench-mail.com"
    msg["Subject"] = "Spring sale"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(idstring=str(n), domain="bench-mail.com")
    msg["List-Unsubscribe"] = "<https://cairn.bench-mail.com/u/token>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content("Spring sale\n\nEverything is 20% off this week.\n")
    msg.add_alternative(HTML, subtype="html")
    return msg


def raw_loop(port: int, n: int) -> dict[str, Any]:
    """N messages over one smtplib connection, one after the other."""
    t = time.perf_counter()
    with smtplib.SMTP(HOST, port, timeout=30) as smtp:
        smtp.ehlo()
        for i in range(n):
            smtp.send_message(build(i), to_addrs=[f"u{i}@bench-mail.com"])
    seconds = time.perf_counter() - t
    return {"messages": n, "seconds": round(seconds, 3), "per_s": round(n / seconds, 1)}


def load_users(db: psycopg.Connection, project_id: int, n: int) -> None:
    """`n` users with an address at bench-mail.com."""
    harness.copy_users(db, project_id, n, email_domain="bench-mail.com")
    db.commit()
    db.execute("ANALYZE users")
    db.commit()


def pipeline(api: str, sk: str, db: psycopg.Connection, n: int, timeout: float) -> dict[str, Any]:
    """A broadcast email to every user, until no message is queued or sending."""
    t = time.perf_counter()
    body = {
        "broadcast": True,
        "title": "Spring sale",
        "body": "Everything is 20% off this week.",
        "url": "https://shop.bench-mail.com/sale?from=email",
        "channels": ["email"],
    }
    send_id = harness.post_notify(api, sk, body)
    counts, done_s = harness.wait_final(db, send_id, n, timeout, started=t)
    sent = counts.get("sent", 0)
    out: dict[str, Any] = {"messages": n, "counts": counts, "timed_out": done_s is None}
    if done_s is not None:
        out.update(seconds=round(done_s, 3), per_s=round(sent / done_s, 1))
    return out


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every message was sent."""
    ap = harness.app_parser(__doc__, DEFAULT_URL, DEFAULT_REDIS, 200.0)
    ap.add_argument("--emails", type=int, default=5000)
    ap.add_argument("--sink-port", type=int, default=None, help=argparse.SUPPRESS)
    args = harness.parse(ap, argv, QUICK)
    if args.sink_port:
        run_sink(args.sink_port)
        return 0
    sink_port = harness.free_port()
    rc = 0
    with harness.app_run(
        args,
        "cairn-bench-email-",
        {"emails": args.emails},
        SMTP_URL=f"smtp://{HOST}:{sink_port}",
        SMTP_FROM="Bench <news@bench-mail.com>",
        PUBLIC_URL="https://cairn.bench-mail.com",
    ) as run:
        results = run.results
        try:
            creds = run.setup_project()
            db = psycopg.connect(**harness.conn_kwargs(args.database_url))
            load_users(db, creds["id"], args.emails)
            log(f"setup: {args.emails} users with an email address")

            sink = run.start("sink", [PY, str(Path(__file__)), "--sink-port", str(sink_port)])
            sink.wait_for_line(lambda line: line.startswith("sink ready"), 30)
            # No Redis here: the raw loop does not use it (and the figures stay comparable).
            meter = harness.app_meter({"sink": sink}, redis_server=False)

            a = meter.snap()
            raw = raw_loop(sink_port, args.emails)
            raw["cpu"] = meter.cores(a, meter.snap())
            results["raw"] = raw
            log(f"raw: {raw['per_s']} msg/s over one connection; cpu {fmt_cpu(raw['cpu'])}")

            app = run.start_app()
            meter = harness.app_meter(
                {"sink": sink, "serve": app.serve, "workers": app.workers}, redis_server=False
            )
            a = meter.snap()
            budget = max(10.0, args.max_seconds - (time.monotonic() - run.started) - 20)
            result = pipeline(app.api, creds["secretKey"], db, args.emails, budget)
            result["cpu"] = meter.cores(a, meter.snap())
            results["pipeline"] = result
            if result["timed_out"] or result["counts"].get("sent", 0) != args.emails:
                rc = 1
            log(f"pipeline: {json.dumps(result)}")
            results["ratio_to_raw"] = ratio(result.get("per_s"), raw["per_s"])
            log(
                f"SUMMARY: pipeline {result.get('per_s')} msg/s, raw smtplib loop {raw['per_s']}"
                f" msg/s, ratio {results['ratio_to_raw']}"
            )
        except Exception as err:
            log(f"bench failed: {type(err).__name__}: {err}")
            for p in run.procs:
                log(p.tail())
            rc = 1
    results["ok"] = rc == 0
    harness.emit(results, args.json_out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
