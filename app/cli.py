"""The `cairn` command: serve, db upgrade, project, key and VAPID key management."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import func, select

from app import create_app
from app.config import ConfigError
from app.db import db
from app.errors import DomainError


def _make_app() -> Flask:
    try:
        return create_app()
    except ConfigError as err:
        click.echo(f"Configuration error: {err}", err=True)
        sys.exit(2)


@click.group(cls=FlaskGroup, create_app=_make_app, add_default_commands=False)
def cli() -> None:
    """Cairn: campaign and journey automation."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cairn")


@cli.group("db")
def db_group() -> None:
    """Database schema."""


def upgrade_database() -> None:
    """Apply all migrations to the configured database."""
    from app.migrate import upgrade

    assert db.engine is not None
    upgrade(db.engine)


@db_group.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply Alembic migrations up to head."""
    upgrade_database()
    assert db.engine is not None
    click.echo(f"Database at head: {db.engine.url.render_as_string(hide_password=True)}")


def _fail(err: DomainError) -> None:
    click.echo(f"Error: {err.message}", err=True)
    sys.exit(1)


def project_credentials(project: Any, sk: Any, pk: Any) -> dict[str, Any]:
    """What `project create` prints: shown once, never retrievable again."""
    return {
        "id": project.id,
        "name": project.name,
        "secretKey": sk.key,
        "publishableKey": pk.key,
        "accessKey": sk.access_key,
        "identitySecret": project.identity_secret,
    }


def print_credentials(creds: dict[str, Any], *, as_json: bool) -> None:
    """Print a project's credentials as JSON or as a readable block."""
    if as_json:
        click.echo(json.dumps(creds))
        return
    click.echo(
        f"Project {creds['id']} ({creds['name']}) — keys are shown once, store them now:\n"
        f"  secret key       {creds['secretKey']}\n"
        f"  publishable key  {creds['publishableKey']}\n"
        f"  access key       {creds['accessKey']}\n"
        f"  identity secret  {creds['identitySecret']}"
    )


@cli.group("project")
def project_group() -> None:
    """Projects (tenants)."""


@project_group.command("create")
@click.argument("name")
@click.option("--region", default=None, help="default phone region, e.g. US or KR")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@with_appcontext
def project_create(name: str, region: str | None, as_json: bool) -> None:
    """Create a project with a secret key, a publishable key and an identity secret."""
    from app.services.projects import create_project

    try:
        with db.begin() as session:
            project, sk, pk = create_project(session, name=name, default_region=region)
            creds = project_credentials(project, sk, pk)
    except DomainError as err:
        _fail(err)
    print_credentials(creds, as_json=as_json)


@cli.group("key")
def key_group() -> None:
    """API keys."""


@key_group.command("create")
@click.option("--project", "project_id", type=int, required=True)
@click.option("--kind", type=click.Choice(["secret", "publishable"]), required=True)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def key_create(project_id: int, kind: str, as_json: bool) -> None:
    """Create a key; it is printed once."""
    from app.services.projects import create_key

    try:
        with db.begin() as session:
            key = create_key(session, project_id=project_id, kind=kind)
    except DomainError as err:
        _fail(err)
    out = {"id": key.id, "kind": kind, "key": key.key, "prefix": key.key.rsplit("_", 1)[0]}
    if kind == "secret":
        out["accessKey"] = key.access_key
    click.echo(json.dumps(out) if as_json else "\n".join(f"{k}: {v}" for k, v in out.items()))


@key_group.command("revoke")
@click.argument("prefix")
@with_appcontext
def key_revoke(prefix: str) -> None:
    """Revoke a key by its prefix (sk_xxxxxxxxxxxx or pk_xxxxxxxxxxxx)."""
    from app.services.projects import revoke_key

    try:
        with db.begin() as session:
            row = revoke_key(session, prefix=prefix)
            shown = row.prefix
    except DomainError as err:
        _fail(err)
    click.echo(f"revoked {shown}")


@cli.command("user-hash")
@click.argument("user_id")
@click.option("--project", "project_id", type=int, default=None, help="default: the first project")
@with_appcontext
def user_hash_command(user_id: str, project_id: int | None) -> None:
    """Print USER_ID's userHash: hex HMAC-SHA256(project identity secret, USER_ID).

    Your backend computes the same value for its signed-in user; this is for trying things out.
    """
    from app.models import Project
    from app.services.projects import user_hash

    with db.begin() as session:
        if project_id is None:
            project = session.scalar(select(Project).order_by(Project.id).limit(1))
            where = "no project yet: run `cairn serve` once or `cairn project create`"
        else:
            project = session.get(Project, project_id)
            where = f"project {project_id} not found"
        if project is None:
            click.echo(f"Error: {where}", err=True)
            sys.exit(1)
        click.echo(user_hash(project.identity_secret, user_id))


def ensure_default_project() -> dict[str, Any] | None:
    """Create the first project on a fresh install; its credentials, or None if one exists."""
    from app.models import Project
    from app.services.projects import create_project

    with db.begin() as session:
        if session.scalar(select(func.count()).select_from(Project)):
            return None
        project, sk, pk = create_project(session, name="Default")
        return project_credentials(project, sk, pk)


@cli.group("vapid")
def vapid_group() -> None:
    """VAPID keys for web push (one or more per project)."""


def _first_vapid_keys() -> None:
    """Every project gets its first VAPID key at start (and warns about a missing subject)."""
    from app.services.vapid import ensure_keys

    with db.begin() as session:
        made = ensure_keys(session)
    if made:
        click.echo(f"Generated the first VAPID key of {made} project(s) (GET /v1/push/vapid-key).")
    if not current_app.config.get("VAPID_SUBJECT"):
        click.echo(
            "Web push: set VAPID_SUBJECT to a real mailto: or https: contact (or the project's "
            "settings.push.vapidSubject); until then push messages fail without being sent.",
            err=True,
        )


@vapid_group.command("generate")
@click.option("--project", "project_id", type=int, default=None, help="default: every project")
@with_appcontext
def vapid_generate(project_id: int | None) -> None:
    """A new VAPID key: new subscriptions get it, existing devices keep signing with theirs."""
    from app.models import Project
    from app.services.vapid import generate_key

    with db.begin() as session:
        if project_id is None:
            ids = list(session.scalars(select(Project.id).order_by(Project.id)))
        elif session.get(Project, project_id) is None:
            click.echo(f"Error: project {project_id} not found", err=True)
            sys.exit(1)
        else:
            ids = [project_id]
        keys = [(pid, generate_key(session, project_id=pid).public_key) for pid in ids]
    for pid, public in keys:
        click.echo(f"project {pid}: {public}")


@cli.group("console")
def console_group() -> None:
    """The marketer console's accounts."""


def _console_setup_link() -> str | None:
    """A new one-time link to create the first console admin, while no account exists."""
    from app.services.console_accounts import create_setup_link, has_accounts

    with db.begin() as session:
        if has_accounts(session):
            return None
        return create_setup_link(session, public_url=current_app.config["PUBLIC_URL"])


@console_group.command("setup-link")
@with_appcontext
def console_setup_link() -> None:
    """Print a new one-time link to create the first admin (earlier links stop working)."""
    link = _console_setup_link()
    if link is None:
        click.echo("A console account exists already: log in, or ask an admin to invite you.")
        raise SystemExit(1)
    click.echo(f"Create the first console admin (one-time link, valid 24 h): {link}")


@cli.command("worker")
@click.option("--processes", type=int, default=None, help="default: CPUs")
@click.option("--threads", type=int, default=8, show_default=True)
def worker(processes: int | None, threads: int) -> None:
    """Run Dramatiq worker processes for BROKER_URL (Redis or RabbitMQ)."""
    if not os.environ.get("BROKER_URL"):
        click.echo("BROKER_URL is not set: `cairn serve` runs workers in-process.", err=True)
        sys.exit(2)
    args = [
        sys.executable,
        "-m",
        "dramatiq",
        "workers.actors",
        "--threads",
        str(threads),
        "--processes",
        str(processes or os.cpu_count() or 1),
    ]
    os.execv(sys.executable, args)


@cli.command("scheduler")
@with_appcontext
def scheduler() -> None:
    """Run the scheduler (standby until it holds the lock); stop with Ctrl-C."""
    if not os.environ.get("BROKER_URL"):
        # Its jobs only send actors: without a shared broker nobody would run them.
        click.echo("BROKER_URL is not set: `cairn serve` runs the scheduler in-process.", err=True)
        sys.exit(2)
    import signal
    import threading

    import workers.actors  # noqa: F401
    from workers import runtime
    from workers.scheduler import SchedulerService

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    assert db.engine is not None
    runtime.configure(engine=db.engine, settings=dict(app.config))
    service = SchedulerService(db.engine, dict(app.config))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    click.echo("scheduler started (standby until it holds the lock)")
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    service.stop()


@cli.command("serve")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=None, help="default: $PORT or 8000")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="server processes (default 1 on SQLite, 2×CPUs on PostgreSQL)",
)
@click.option(
    "--threads",
    type=int,
    default=32,
    show_default=True,
    help="threads per process (each open SSE stream holds one)",
)
@with_appcontext
def serve(host: str, port: int | None, workers: int | None, threads: int) -> None:
    """Run Cairn with gunicorn: migrations applied, a default project on first start."""
    from app.server import run_server

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    upgrade_database()
    creds = ensure_default_project()
    if creds is not None:
        click.echo("First start: created the default project.")
        print_credentials(creds, as_json=False)
    _first_vapid_keys()
    link = _console_setup_link()
    if link is not None:
        click.echo(f"Console: create the first admin with this one-time link (valid 24 h): {link}")
    port = port or app.config["PORT"]
    if workers is None:
        workers = 1 if db.dialect == "sqlite" else max(2, 2 * (os.cpu_count() or 1))
    if db.dialect == "sqlite" and workers > 1:
        click.echo("SQLite is embedded: running one process (use PostgreSQL for more).", err=True)
        workers = 1
    click.echo(f"Cairn listening on http://{'localhost' if host == '0.0.0.0' else host}:{port}")
    sys.stdout.flush()
    assert db.engine is not None
    db.engine.dispose()  # the forked workers open their own connections
    run_server(app, host=host, port=port, workers=workers, threads=threads)
