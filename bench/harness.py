"""What every benchmark here shares: its database, the processes it starts, CPU metering, figures.

- Safety: a bench wipes its database, so it only takes PostgreSQL on a loopback host under a
  name of its own (`check_database`), and `reset_database` creates it or empties schema public.
- Processes (`Proc`) run in their own process group with their output in a log file, and are
  always stopped as a group (SIGTERM, then SIGKILL for stragglers).
- `CpuMeter` reads /proc: cores used during a phase by named sets of processes, the machine as a
  whole and "other" processes (a busy machine makes every figure pessimistic: it is printed).
- Figures: nearest-rank percentiles in ms, ratios to an in-run baseline, goal verdicts, and the
  closing JSON line.
- Arguments: `--database-url`, `--max-seconds`, `--json-out` and `--quick` (a smoke run at tiny
  sizes: it checks that the bench works, its figures mean nothing).
- Cairn as deployed (`fanout.py`, `push.py`, `mail.py`): their options (`app_parser`), the
  frame of a run (`app_run`: URL checks, time limit, temporary directory, the environment of
  Cairn's processes, always stopping them), a fresh project (`setup_project`), `cairn serve`
  plus Dramatiq workers (`start_app`), their CPU beside PostgreSQL's and Redis's
  (`app_meter`), and a broadcast (`post_notify`) followed until its messages are final
  (`wait_final`).

Scripts import it as `harness` (Python puts a script's own directory first on sys.path).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import redis
import requests
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "127.0.0.1"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Databases a bench must never wipe.
PROTECTED = {"test", "postgres", "template0", "template1", "cairn"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Variables of this shell a Cairn process must not inherit (app_env sets its own).
APP_ENV_DROP = ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "SECRET_KEY", "PORT")
WORKER_READY = "Worker process is ready for action"  # one line per dramatiq worker process
PENDING = ("queued", "sending")  # message statuses that are not final


class BenchTimeout(Exception):
    """The whole run went over --max-seconds."""


# --------------------------------------------------------------------------------------------
# Small helpers


def log(msg: str) -> None:
    """A progress line with the wall-clock time."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as text."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Deadline:
    """The run's time limit, shared out between phases."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + seconds

    def left(self) -> float:
        """Seconds left."""
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    def budget(self, wanted: float, reserve: float = 15.0) -> float:
        """`wanted` seconds, or less so that `reserve` remains for the rest."""
        return max(0.0, min(wanted, self.left() - reserve))


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so that `finally` blocks stop what the run started."""

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise BenchTimeout in the main thread once `seconds` have passed."""

    def on_alarm(_sig: int, _frame: Any) -> None:
        raise BenchTimeout(f"bench went over {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(seconds) + 1)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------------------------
# Figures


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile of values in seconds, in ms; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1] * 1000


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """a / b rounded, or None when either is missing (or b is zero)."""
    if a is None or not b:
        return None
    return round(a / b, digits)


def verdict(met: bool | None) -> str:
    """How a figure stands against its goal."""
    return "n/a" if met is None else "MET" if met else "NOT MET"


def log_problems(text: str) -> dict[str, int]:
    """Tracebacks and error lines in a process's log."""
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "errors": sum(1 for line in text.splitlines() if " ERROR " in line or "[ERROR]" in line),
    }


def emit(result: dict[str, Any], json_out: str | None) -> None:
    """The closing line: every figure as one JSON object (also written to `json_out`)."""
    line = json.dumps(result, default=str)
    if json_out:
        Path(json_out).write_text(line + "\n")
    print(line, flush=True)


# --------------------------------------------------------------------------------------------
# Arguments


def parser(
    doc: str | None, default_url: str, max_seconds: float | None = None, json_out: bool = True
) -> argparse.ArgumentParser:
    """The options every bench takes (a time limit and a JSON file where it has them); add its
    own, then call `parse`."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0] if doc else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--database-url",
        default=default_url,
        help="SQLAlchemy URL of a PostgreSQL database this run may wipe",
    )
    if max_seconds is not None:
        p.add_argument("--max-seconds", type=float, default=max_seconds, help="hard limit")
    if json_out:
        p.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run at tiny sizes (checks that the bench works; the figures mean nothing)",
    )
    return p


def parse(
    p: argparse.ArgumentParser, argv: list[str] | None, quick: dict[str, Any]
) -> argparse.Namespace:
    """Parse `argv`; with --quick, the sizes in `quick` replace the defaults."""
    args = p.parse_args(argv)
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
    return args


# --------------------------------------------------------------------------------------------
# PostgreSQL


def conn_kwargs(url: str) -> dict[str, Any]:
    """psycopg connect() keywords from a SQLAlchemy-style URL."""
    u = make_url(url)
    out: dict[str, Any] = {
        "dbname": u.database,
        "user": u.username,
        "host": u.host,
        "port": u.port,
        "password": u.password,
    }
    return {k: v for k, v in out.items() if v is not None}


def check_database(url: str) -> None:
    """Exit unless `url` is a PostgreSQL database on loopback with a name of its own."""
    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        sys.exit("the benchmark needs PostgreSQL")
    if u.host is not None and u.host not in LOOPBACK:
        sys.exit(f"refusing a non-loopback database host {u.host!r}: the bench wipes its database")
    if u.database is None or u.database in PROTECTED:
        sys.exit(f"refusing to reset database {u.database!r}: use a database of its own")


def reset_database(url: str) -> None:
    """Create the bench database if missing, then drop and recreate schema public."""
    check_database(url)
    kw = conn_kwargs(url)
    name = kw["dbname"]
    admin = dict(kw, dbname="postgres")
    with psycopg.connect(**admin, autocommit=True, connect_timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            log(f"created database {name}")
    with psycopg.connect(**kw, autocommit=True, connect_timeout=10) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    log(f"reset schema public of {name}")


def copy_users(
    db: psycopg.Connection, project_id: int, n: int, email_domain: str | None = None
) -> None:
    """COPY users `u1` ... `u<n>` into the project (with `u<i>@<email_domain>` addresses when
    given); the caller commits."""
    columns = "project_id, external_id, email, attributes, created_at, updated_at"
    if email_domain is None:
        columns = columns.replace(" email,", "")
    with db.cursor() as cur, cur.copy(f"COPY users ({columns}) FROM STDIN") as copy:
        for i in range(1, n + 1):
            email = "" if email_domain is None else f"u{i}@{email_domain}\t"
            copy.write(f"{project_id}\tu{i}\t{email}{{}}\tnow\tnow\n")


def message_counts(db: psycopg.Connection, send_id: int) -> dict[str, int]:
    """How many of the send's messages are in each status (the transaction is ended)."""
    rows = db.execute(
        "SELECT status, count(*) FROM messages WHERE send_id = %s GROUP BY status", (send_id,)
    ).fetchall()
    db.commit()
    return {status: count for status, count in rows}


def backend_pids(url: str) -> list[int]:
    """PostgreSQL backends connected to this database (this query's own excluded)."""
    with psycopg.connect(**conn_kwargs(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return [r[0] for r in rows]


# --------------------------------------------------------------------------------------------
# Processes


def cairn_command() -> str:
    """The `cairn` command of this virtualenv (or on PATH)."""
    cairn = Path(PY).parent / "cairn"
    if cairn.exists():
        return str(cairn)
    found = shutil.which("cairn")
    if found is None:
        sys.exit("cannot find the `cairn` command: run `pip install -e .` in the venv first")
    return found


class Proc:
    """A command in its own process group, its stdout and stderr in `<logdir>/<name>.log`."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._sink = self.log_path.open("w")
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The group leader's pid."""
        return self.proc.pid

    def output(self) -> str:
        """Everything it has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 30) -> str:
        """The last `n` lines of its log, headed by its name."""
        return f"\n--- {self.name} log ---\n" + "\n".join(self.output().splitlines()[-n:])

    def pids(self) -> list[int]:
        """Every live process in this group."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(entry.name)) == self.proc.pid:
                        out.append(int(entry.name))
        return out

    def children(self) -> list[int]:
        """The group's processes but its leader (gunicorn's workers, dramatiq's processes)."""
        return sorted(p for p in self.pids() if p != self.proc.pid)

    def alive(self) -> bool:
        """True while the leader runs."""
        return self.proc.poll() is None

    def wait_for_line(self, match: Callable[[str], bool], timeout: float) -> str:
        """The first log line `match` accepts; RuntimeError if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if match(line):
                    return line
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}{self.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: expected output not seen in {timeout:.0f} s{self.tail()}")

    def wait_http_ok(self, url: str, timeout: float) -> None:
        """Poll `url` until it answers 200; RuntimeError if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}{self.tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {url} in {timeout:.0f} s{self.tail()}")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the group, SIGKILL it after `timeout` s; stragglers are killed too."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # A forked child outliving its parent is still in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._sink.close()


class SseReader(threading.Thread):
    """Reads one SSE stream line by line (http.client: no read-ahead buffering of frames) and
    records when each frame arrived (`clock()`), under the key `key(line)` gives a line (None:
    not a frame's key line). `connected` is set at the server's `: connected` comment."""

    def __init__(
        self,
        port: int,
        path: str,
        key: Callable[[bytes], Any],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(daemon=True, name="sse-reader")
        self.port, self.path, self.key, self.clock = port, path, key, clock
        self.arrivals: dict[Any, float] = {}
        self.connected = threading.Event()
        self.error: str | None = None
        self.conn: http.client.HTTPConnection | None = None

    def run(self) -> None:
        try:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
            self.conn.request("GET", self.path, headers={"Accept": "text/event-stream"})
            resp = self.conn.getresponse()
            if resp.status != 200:
                self.error = f"{resp.status} {resp.read(500)!r}"
                return
            while True:
                line = resp.readline()
                if not line:
                    self.error = self.error or "stream closed by the server"
                    return
                if line.startswith(b": connected"):
                    self.connected.set()
                    continue
                key = self.key(line)
                if key is not None:
                    self.arrivals.setdefault(key, self.clock())
        except Exception as err:  # closed by stop()
            if not self.connected.is_set() or self.error is None:
                self.error = self.error or f"{type(err).__name__}: {err}"
        finally:
            self.connected.set()

    def stop(self) -> None:
        """Close the stream (its thread then ends)."""
        if self.conn is not None and self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------
# CPU


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds all CPUs have spent busy since boot (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


def pids_named(comm: str) -> list[int]:
    """Processes whose command name is `comm` (`postgres`, `redis-server`)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == comm:
                    out.append(int(entry.name))
    return out


class CpuMeter:
    """Cores used during a phase by named sets of processes, the machine, and everything else.

    `sources` maps a name to a function listing its pids at the time of a snapshot. CPU that is
    not counted in a process (a client's own measure) is passed to `cores`/`stop` as `extra`.
    """

    def __init__(self, sources: dict[str, Callable[[], Iterable[int]]]) -> None:
        self.sources = sources
        self.begin: dict[str, Any] | None = None

    def snap(self) -> dict[str, Any]:
        """CPU seconds of every source's processes and of the machine, now."""
        procs = {name: {p: proc_cpu(p) for p in pids()} for name, pids in self.sources.items()}
        return {"t": time.monotonic(), "machine": machine_busy(), "procs": procs}

    def cores(self, a: dict[str, Any], b: dict[str, Any], **extra: float) -> dict[str, float]:
        """Average cores used between two snapshots; `extra` are CPU seconds of their own."""
        wall = max(b["t"] - a["t"], 1e-6)
        used: dict[str, float] = {}
        for name, now in b["procs"].items():
            before = a["procs"].get(name, {})
            used[name] = sum(max(0.0, c - before.get(p, 0.0)) for p, c in now.items())
        used.update(extra)
        machine = b["machine"] - a["machine"]
        out = {k: round(v / wall, 2) for k, v in used.items()}
        out["machine"] = round(machine / wall, 2)
        out["other"] = round(max(0.0, machine - sum(used.values())) / wall, 2)
        return out

    def start(self) -> None:
        """Begin a phase."""
        self.begin = self.snap()

    def stop(self, **extra: float) -> dict[str, float]:
        """Cores used since start()."""
        assert self.begin is not None, "CpuMeter.stop() before start()"
        return self.cores(self.begin, self.snap(), **extra)


def fmt_cpu(cpu: dict[str, float]) -> str:
    """`name=cores ...` for a log line."""
    return " ".join(f"{k}={v:.2f}" for k, v in cpu.items())


# --------------------------------------------------------------------------------------------
# Cairn as deployed: serve + Dramatiq workers on Redis


def check_redis(url: str) -> None:
    """Exit unless `url` is a loopback redis:// URL (the bench flushes its database)."""
    r = urllib.parse.urlparse(url)
    if r.scheme != "redis" or (r.hostname or "") not in LOOPBACK:
        sys.exit("only loopback redis:// URLs are allowed (the bench flushes its database)")


def app_parser(
    doc: str | None, default_url: str, default_redis: str, max_seconds: float
) -> argparse.ArgumentParser:
    """`parser`'s options (BENCH_DATABASE_URL sets the default URL) and those of a bench that
    runs Cairn: `--redis-url` (BENCH_REDIS_URL), `--processes` and `--threads` (the workers'
    shape) and `--logs`; add its own, then call `parse`."""
    p = parser(doc, os.environ.get("BENCH_DATABASE_URL", default_url), max_seconds)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", default_redis))
    p.add_argument("--processes", type=int, default=2, help="dramatiq worker processes")
    p.add_argument("--threads", type=int, default=8, help="threads per worker process")
    p.add_argument(
        "--logs", default=None, help="keep the processes' logs here (default: a tmp dir)"
    )
    return p


class AppRun:
    """One run of a bench that starts Cairn (see `app_run`): its start (time.monotonic()), the
    processes to stop at its end (`procs`), its temporary directory, where the logs go, the
    environment of Cairn's processes, and the results so far (the sizes, the worker shape and
    the log directory)."""

    def __init__(
        self, args: argparse.Namespace, prefix: str, sizes: dict[str, Any], env: dict[str, str]
    ) -> None:
        self.args = args
        self.started = time.monotonic()
        self.procs: list[Proc] = []
        self.tmp, self.logdir = workdir(prefix, getattr(args, "logs", None))
        self.env = app_env(args.database_url, args.redis_url, self.tmp / "instance", **env)
        self.results: dict[str, Any] = dict(
            sizes, processes=args.processes, threads=args.threads, logs=str(self.logdir)
        )

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start a process of the run (logged in `logdir`, stopped at its end)."""
        p = Proc(name, command, self.env if env is None else env, self.logdir)
        self.procs.append(p)
        return p

    def setup_project(self) -> dict[str, Any]:
        """`setup_project` on the run's database, Redis database and environment."""
        return setup_project(self.args.database_url, self.args.redis_url, self.env)

    def start_app(self, worker_env: dict[str, str] | None = None) -> App:
        """`start_app` with the run's --processes and --threads."""
        a = self.args
        return start_app(self.procs, self.env, self.logdir, a.processes, a.threads, worker_env)


@contextlib.contextmanager
def app_run(
    args: argparse.Namespace,
    prefix: str,
    sizes: dict[str, Any],
    flush_redis: bool = False,
    **env: str,
) -> Iterator[AppRun]:
    """The frame of a run that starts Cairn: check `args.database_url` and `args.redis_url`,
    turn --max-seconds (BenchTimeout) and SIGTERM (KeyboardInterrupt) into exceptions, and
    yield the AppRun (temporary directory `prefix...`, `env` added to the processes'
    environment, `sizes` first in the results); however it ends, stop every process of the
    run, the last started first (then empty the Redis database, with `flush_redis`)."""
    check_database(args.database_url)
    check_redis(args.redis_url)
    interrupt_on_sigterm()
    run: AppRun | None = None
    try:
        with alarm(args.max_seconds):  # off before the processes are stopped
            run = AppRun(args, prefix, sizes, env)
            yield run
    finally:
        if run is not None:
            stop_all(run.procs)
        if flush_redis:
            with contextlib.suppress(Exception):
                redis.Redis.from_url(args.redis_url).flushdb()


def workdir(prefix: str, logs: str | None) -> tuple[Path, Path]:
    """A new temporary directory, and the log directory: `logs` (created) or that one."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    logdir = Path(logs) if logs else tmp
    logdir.mkdir(parents=True, exist_ok=True)
    return tmp, logdir


def app_env(database_url: str, redis_url: str, instance_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of Cairn's processes: this one's, minus what `APP_ENV_DROP` names, with
    the bench's database and Redis (broker and pub/sub), an instance dir of its own, unbuffered
    output, and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV_DROP}
    env.update(
        DATABASE_URL=database_url,
        BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        INSTANCE_DIR=str(instance_dir),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def run_cairn(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """`cairn <args>` to the end; its stdout (RuntimeError with its output if it fails)."""
    done = subprocess.run(
        [cairn_command(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"cairn {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def setup_project(database_url: str, redis_url: str, env: dict[str, str]) -> dict[str, Any]:
    """Wipe the bench's database and Redis database, migrate, create project `bench`: its
    credentials (`id`, `secretKey`, `publishableKey`, `identitySecret`)."""
    reset_database(database_url)
    redis.Redis.from_url(redis_url).flushdb()
    run_cairn(env, "db", "upgrade")
    out = run_cairn(env, "project", "create", "bench", "--json")
    creds: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return creds


def dramatiq_command(module: str, processes: int, threads: int) -> list[str]:
    """`python -m dramatiq <module>` with that many processes and threads each."""
    return [
        PY,
        "-m",
        "dramatiq",
        module,
        "--processes",
        str(processes),
        "--threads",
        str(threads),
    ]


def wait_workers_ready(p: Proc, count: int, timeout: float) -> None:
    """Wait for `count` dramatiq worker processes of `p` to log that they are ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.output().count(WORKER_READY) >= count:
            return
        if not p.alive():
            raise RuntimeError(f"{p.name} exited:\n{p.output()[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{p.name} not ready after {timeout}s:\n{p.output()[-3000:]}")


class App(NamedTuple):
    """Cairn running: the API server, the workers, the API's port and base URL."""

    serve: Proc
    workers: Proc
    port: int
    api: str


def start_app(
    procs: list[Proc],
    env: dict[str, str],
    logdir: Path,
    processes: int,
    threads: int,
    worker_env: dict[str, str] | None = None,
    timeout: float = 60,
) -> App:
    """`cairn serve` (API only) on a free port and `python -m dramatiq workers.actors`; both go
    into `procs` as soon as they start (the caller stops them), then this waits for /healthz and
    for every worker process."""
    port = free_port()
    serve = Proc(
        "serve", [cairn_command(), "serve", "--host", HOST, "--port", str(port)], env, logdir
    )
    procs.append(serve)
    workers = Proc(
        "workers",
        dramatiq_command("workers.actors", processes, threads),
        env if worker_env is None else worker_env,
        logdir,
    )
    procs.append(workers)
    api = f"http://{HOST}:{port}"
    serve.wait_http_ok(api + "/healthz", timeout)
    wait_workers_ready(workers, processes, timeout)
    return App(serve, workers, port, api)


def stop_all(procs: list[Proc]) -> None:
    """Stop every process, the last started first."""
    for p in reversed(procs):
        p.stop()


def bench_pids() -> list[int]:
    """This script and its multiprocessing children (a baseline's pool)."""
    children = [c.pid for c in multiprocessing.active_children()]
    return [os.getpid(), *[pid for pid in children if pid is not None]]


def app_meter(groups: dict[str, Proc], *, redis_server: bool = True) -> CpuMeter:
    """A CpuMeter of each group, of PostgreSQL (and Redis), and of this script (`bench`)."""
    sources: dict[str, Callable[[], Iterable[int]]] = {n: g.pids for n, g in groups.items()}
    sources["postgres"] = lambda: pids_named("postgres")
    if redis_server:
        sources["redis"] = lambda: pids_named("redis-server")
    sources["bench"] = bench_pids
    return CpuMeter(sources)


def post_notify(api: str, sk: str, body: dict[str, Any]) -> int:
    """`POST /v1/notify` with the secret key: the send's id (RuntimeError unless 202)."""
    resp = requests.post(
        api + "/v1/notify", json=body, headers={"Authorization": f"Bearer {sk}"}, timeout=30
    )
    if resp.status_code != 202:
        raise RuntimeError(f"POST /v1/notify: {resp.status_code} {resp.text[:500]}")
    return int(resp.json()["id"])


def wait_final(
    db: psycopg.Connection,
    send_id: int,
    n: int,
    timeout: float,
    *,
    started: float,
    poll: float = 0.1,
    name: str = "pipeline",
) -> tuple[dict[str, int], float | None]:
    """Poll until the send is done and `n` of its messages are final (none queued or sending),
    with a progress line every 5 s: the counts by status, and the seconds from `started` (a
    perf_counter() reading) to then, None if `timeout` s passed first."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    last_log = 0.0
    while time.monotonic() < deadline:
        row = db.execute("SELECT status FROM sends WHERE id = %s", (send_id,)).fetchone()
        status = row[0] if row else None
        counts = message_counts(db, send_id)
        if time.monotonic() - last_log > 5:
            last_log = time.monotonic()
            log(f"{name}: t={time.perf_counter() - started:.1f}s send={status} counts={counts}")
        pending = sum(counts.get(s, 0) for s in PENDING)
        if status == "done" and sum(counts.values()) >= n and pending == 0:
            return counts, time.perf_counter() - started
        time.sleep(poll)
    return counts, None
