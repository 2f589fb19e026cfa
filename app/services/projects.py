"""Projects, API keys, token exchange and end-user identity hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound, Unauthorized
from app.models import ApiKey, Project
from app.models.base import utcnow

KIND_PREFIX = {"secret": "sk", "publishable": "pk"}
PREFIX_KIND = {v: k for k, v in KIND_PREFIX.items()}
# lastUsedAt is refreshed at most this often, so a hot key does not write on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


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
    forget_keys()
    return row


def _parse_key(raw: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] not in PREFIX_KIND:
        return None
    return PREFIX_KIND[parts[0]], parts[1]


# Authenticated keys are remembered briefly so a hot key costs no query per request. A key
# revoked in this process is forgotten at once; other processes stop accepting it within
# KEY_CACHE_SECONDS.
KEY_CACHE_SECONDS = 10.0
_key_cache: dict[str, tuple[Principal, float]] = {}
_key_cache_lock = threading.Lock()


def _cached(cache_key: str) -> Principal | None:
    with _key_cache_lock:
        hit = _key_cache.get(cache_key)
    if hit is not None and hit[1] > time.monotonic():
        return hit[0]
    return None


def _remember(cache_key: str, principal: Principal) -> None:
    with _key_cache_lock:
        if len(_key_cache) > 10_000:
            _key_cache.clear()
        _key_cache[cache_key] = (principal, time.monotonic() + KEY_CACHE_SECONDS)


def forget_keys() -> None:
    """Drop every remembered key (after a revocation)."""
    with _key_cache_lock:
        _key_cache.clear()


def authenticate_key(session: Session, raw: str) -> Principal:
    """Resolve a raw `sk_`/`pk_` key to its project; revoked or unknown keys are refused."""
    parsed = _parse_key(raw)
    if parsed is None:
        raise Unauthorized("Invalid API key")
    digest = hash_key(raw)
    hit = _cached(digest)
    if hit is not None:
        return hit
    kind, key_id = parsed
    row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if (
        row is None
        or row.kind != kind
        or not hmac.compare_digest(row.key_hash, digest)
        or row.revoked_at is not None
    ):
        raise Unauthorized("Invalid or revoked API key")
    _touch(session, row)
    principal = Principal(project_id=row.project_id, kind=row.kind, key_pk=row.id)
    _remember(digest, principal)
    return principal


def _touch(session: Session, row: ApiKey) -> None:
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))


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
    # The signature and age are checked on every use above; only the key row is remembered.
    hit = _cached(f"token:{token}")
    if hit is not None:
        return hit
    row = session.get(ApiKey, data.get("k"))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("Invalid or revoked API key")
    _touch(session, row)
    principal = Principal(project_id=row.project_id, kind=row.kind, key_pk=row.id)
    _remember(f"token:{token}", principal)
    return principal


def user_hash(identity_secret: str, user_id: str) -> str:
    """The end-user identity hash: hex HMAC-SHA256(identity secret, userId)."""
    return hmac.new(identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()
