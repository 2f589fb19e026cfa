"""Projects, API keys, token exchange and end-user identity hashes."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import Engine, Row, bindparam, create_engine, event, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from app.errors import InvalidInput, NotFound, Unauthorized
from app.models import ApiKey, Project
from app.models.base import utcnow

KIND_PREFIX = {"secret": "sk", "publishable": "pk"}
PREFIX_KIND = {v: k for k, v in KIND_PREFIX.items()}
# lastUsedAt is refreshed at most this often, so a hot key does not write on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_touch_lock = threading.Lock()


@dataclass(frozen=True)
class NewKey:
    """A key as shown once, at creation."""

    id: int
    kind: str
    key: str
    key_id: str

    @property
    def access_key(self) -> str:
        """The access key id paired with a secret key in `POST /v1/auth/token`."""
        return f"ak_{self.key_id}"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the project and the kind of key (or token) used."""

    project_id: int
    kind: str
    key_pk: int
    # The project's identity settings, read with the key (see app.services.identity).
    identity_secret: str = field(default="", repr=False)
    identity_required: bool = False


def hash_key(raw: str) -> str:
    """SHA-256 of a key: keys are 190+ bits of randomness, so a fast hash is enough."""
    return hashlib.sha256(raw.encode()).hexdigest()


def create_project(
    session: Session, *, name: str, default_region: str | None = None
) -> tuple[Project, NewKey, NewKey]:
    """Create a project with one secret and one publishable key."""
    name = name.strip()
    if not name:
        raise InvalidInput("name must not be empty", {"name": ["must not be empty"]})
    if default_region is not None:
        default_region = default_region.upper()
        if len(default_region) != 2 or not default_region.isalpha():
            raise InvalidInput(
                "default region must be an ISO 3166 alpha-2 code",
                {"defaultRegion": ["expected two letters, e.g. US or KR"]},
            )
    project = Project(
        name=name,
        identity_secret=secrets.token_hex(32),
        default_region=default_region,
        settings={},
    )
    session.add(project)
    session.flush()
    sk = create_key(session, project_id=project.id, kind="secret")
    pk = create_key(session, project_id=project.id, kind="publishable")
    return project, sk, pk


def update_project(project: Project, changes: Mapping[str, Any]) -> Project:
    """Apply a validated PATCH (`ProjectPatchSchema`): `name`, `defaultRegion`, and `settings`
    merged key by key (a null value removes that setting)."""
    if "name" in changes:
        project.name = changes["name"].strip()
    if "defaultRegion" in changes:
        region = changes["defaultRegion"]
        project.default_region = region.upper() if region else None
    if "settings" in changes:
        merged = dict(project.settings or {})
        for key, value in changes["settings"].items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        project.settings = merged
    return project


def create_key(session: Session, *, project_id: int, kind: str) -> NewKey:
    """Create a key; the raw value is returned once and only its hash is stored."""
    if kind not in KIND_PREFIX:
        raise InvalidInput(f"unknown key kind {kind!r}", {"kind": ["secret or publishable"]})
    if session.get(Project, project_id) is None:
        raise NotFound(f"project {project_id} not found")
    key_id = secrets.token_hex(6)
    raw = f"{KIND_PREFIX[kind]}_{key_id}_{secrets.token_urlsafe(24)}"
    row = ApiKey(project_id=project_id, kind=kind, key_id=key_id, key_hash=hash_key(raw))
    session.add(row)
    session.flush()
    return NewKey(id=row.id, kind=kind, key=raw, key_id=key_id)


def revoke_key(session: Session, *, prefix: str) -> ApiKey:
    """Revoke a key by its displayed prefix (`sk_abc123`), its access key or its raw value."""
    parts = prefix.strip().split("_")
    if len(parts) < 2 or parts[0] not in ("sk", "pk", "ak"):
        raise InvalidInput("expected a key prefix like sk_1a2b3c4d5e6f", {"prefix": ["malformed"]})
    row = session.scalar(select(ApiKey).where(ApiKey.key_id == parts[1]))
    if row is None or (parts[0] != "ak" and KIND_PREFIX[row.kind] != parts[0]):
        raise NotFound(f"no key with prefix {prefix}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


def _parse_key(raw: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] not in PREFIX_KIND:
        return None
    return PREFIX_KIND[parts[0]], parts[1]


# Keys are not cached: each request reads its key row (with the project's identity settings)
# in one indexed query, so a revocation is seen by every process at once. The read runs on a
# connection of its own in autocommit mode: no transaction is left open in the request session
# (on SQLite a transaction takes the write lock, which the group-commit ingest writer needs
# while the request waits for it) and no pooled connection is held across the request.
_KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.project_id,
    ApiKey.kind,
    ApiKey.key_hash,
    ApiKey.revoked_at,
    ApiKey.last_used_at,
    Project.identity_secret,
    Project.settings,
)
_read_engines: weakref.WeakKeyDictionary[Engine, tuple[int, Engine]] = weakref.WeakKeyDictionary()
_touched: dict[str, float] = {}


def _reader(engine: Engine) -> Engine | None:
    """An engine of this process whose connections read without a transaction; None to use
    the session (an in-memory SQLite database, which another engine would not see)."""
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return None
    hit = _read_engines.get(engine)
    if hit is not None and hit[0] == os.getpid():
        return hit[1]
    if engine.dialect.name == "sqlite":
        # Our SQLite engines begin every transaction with BEGIN IMMEDIATE (app/db.py), even in
        # autocommit mode; an engine without that hook reads lock-free under WAL.
        reader = create_engine(
            engine.url,
            connect_args={"check_same_thread": False, "timeout": 30},
            isolation_level="AUTOCOMMIT",
        )

        @event.listens_for(reader, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

    else:
        # No pre-ping round trip per checkout: a connection found dead is retried once below.
        reader = create_engine(
            engine.url, isolation_level="AUTOCOMMIT", pool_size=4, max_overflow=28
        )
    # Its connections go when the main engine's do (tests dispose theirs between runs).
    event.listen(engine, "engine_disposed", lambda _engine: reader.dispose())
    _read_engines[engine] = (os.getpid(), reader)
    return reader


_KEY_SELECT = select(*_KEY_COLUMNS).join(Project, Project.id == ApiKey.project_id)
_KEY_BY_KEY_ID = _KEY_SELECT.where(ApiKey.key_id == bindparam("value"))
_KEY_BY_ID = _KEY_SELECT.where(ApiKey.id == bindparam("value"))


def _key_row(session: Session, stmt: Any, value: Any) -> Row[Any] | None:
    bind = session.get_bind()
    reader = _reader(bind) if isinstance(bind, Engine) else None
    if reader is None:
        return session.execute(stmt, {"value": value}).first()
    for attempt in range(2):
        try:
            with reader.connect() as conn:
                return conn.execute(stmt, {"value": value}).first()
        except DBAPIError as err:
            # A pooled connection the server dropped (restart, idle timeout) is invalidated
            # by SQLAlchemy: one retry takes a fresh one.
            if not err.connection_invalidated or attempt:
                raise
    return None


def _principal(session: Session, row: Row[Any]) -> Principal:
    settings = row.settings if isinstance(row.settings, dict) else {}
    _touch(session, row.id, row.key_hash, row.last_used_at)
    return Principal(
        project_id=row.project_id,
        kind=row.kind,
        key_pk=row.id,
        identity_secret=row.identity_secret,
        identity_required=settings.get("identityVerification") == "required",
    )


def authenticate_key(session: Session, raw: str) -> Principal:
    """Resolve a raw `sk_`/`pk_` key to its project; revoked or unknown keys are refused."""
    parsed = _parse_key(raw)
    if parsed is None:
        raise Unauthorized("Invalid API key")
    kind, key_id = parsed
    row = _key_row(session, _KEY_BY_KEY_ID, key_id)
    if (
        row is None
        or row.kind != kind
        or not hmac.compare_digest(row.key_hash, hash_key(raw))
        or row.revoked_at is not None
    ):
        raise Unauthorized("Invalid or revoked API key")
    return _principal(session, row)


def _touch(session: Session, key_pk: int, key_hash: str, last_used_at: datetime | None) -> None:
    """Refresh lastUsedAt (at most once a minute) as part of the caller's next commit.

    The row is marked dirty without being loaded, so the UPDATE is flushed by the request's
    one commit (or an earlier flush of its own writes) and never opens a transaction here.
    """
    now = utcnow()
    if last_used_at is not None and now - last_used_at <= LAST_USED_RESOLUTION:
        return
    # Several threads of a process see the same stale value: one of them writes it.
    with _touch_lock:
        mono = time.monotonic()
        # By hash, not row id: ids repeat across databases (tests, several installs).
        if _touched.get(key_hash, 0.0) > mono - LAST_USED_RESOLUTION.total_seconds():
            return
        if len(_touched) > 10_000:
            _touched.clear()
        _touched[key_hash] = mono
    row = session.identity_map.get(identity_key(ApiKey, key_pk))
    if row is None:
        row = ApiKey(id=key_pk)
        make_transient_to_detached(row)
        session.add(row)
    row.last_used_at = now


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="cairn.auth-token")


def issue_token(session: Session, *, access_key: str, secret_key: str, secret: str) -> str:
    """Exchange an access key + secret key for a bearer token (verified on each use)."""
    principal = authenticate_key(session, secret_key)
    parsed = _parse_key(secret_key)
    if principal.kind != "secret" or parsed is None or access_key != f"ak_{parsed[1]}":
        raise Unauthorized("accessKey and secretKey do not match")
    return "tk_" + _serializer(secret).dumps({"k": principal.key_pk})


def authenticate_token(session: Session, token: str, *, secret: str, max_age: int) -> Principal:
    """Resolve a bearer token; expired tokens and tokens of revoked keys are refused."""
    try:
        data = _serializer(secret).loads(token.removeprefix("tk_"), max_age=max_age)
    except SignatureExpired:
        raise Unauthorized("Token expired") from None
    except BadSignature:
        raise Unauthorized("Invalid token") from None
    key_pk = data.get("k") if isinstance(data, dict) else None
    if not isinstance(key_pk, int):
        raise Unauthorized("Invalid token")
    row = _key_row(session, _KEY_BY_ID, key_pk)
    if row is None or row.revoked_at is not None:
        raise Unauthorized("Invalid or revoked API key")
    return _principal(session, row)


def user_hash(identity_secret: str, user_id: str) -> str:
    """The end-user identity hash: hex HMAC-SHA256(identity secret, userId)."""
    return hmac.new(identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()
