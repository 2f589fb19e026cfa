"""Request authentication: API keys, bearer tokens and the scope each endpoint needs."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from app.db import db
from app.errors import Forbidden, Unauthorized
from app.models import Project
from app.services.identity import HASH_HEADER, Verification
from app.services.projects import Principal, authenticate_key, authenticate_token

F = TypeVar("F", bound=Callable[..., Any])

SECRET = "secret"
PUBLISHABLE = "publishable"


# Only a publishable key may travel in a URL (pixels, EventSource): URLs end up in logs,
# browser history and Referer headers, so a secret key or a token there is refused outright.
QUERY_REFUSED = ("sk_", "tk_")


def credential_from_request(*, allow_query: bool = False) -> str | None:
    """The raw key or token: `Bearer x`, Basic-auth user name (Segment SDKs), or a pk `?key=`.

    A secret key or token in `?key=` is refused (401) on every endpoint, whatever the header.
    """
    query_key = request.args.get("key")
    if query_key and query_key.startswith(QUERY_REFUSED):
        raise Unauthorized(
            "Secret keys and tokens are never accepted in a query string: send "
            "Authorization: Bearer <key> (only a publishable pk_ key may be given as ?key=)",
            {"key": ["only a publishable key (pk_...) is accepted in the query string"]},
        )
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("Malformed Basic authorization header") from None
        user, _, password = decoded.partition(":")
        return user or password or None
    if allow_query:
        return query_key or None
    return None


def resolve_principal(raw: str | None) -> Principal:
    """Authenticate a raw credential; its lastUsedAt refresh rides on the request's commit."""
    if not raw:
        raise Unauthorized("Missing API key: send Authorization: Bearer <key>")
    session = db.session
    if raw.startswith("tk_"):
        return authenticate_token(
            session,
            raw,
            secret=current_app.config["SECRET_KEY"],
            max_age=current_app.config["TOKEN_TTL_SECONDS"],
        )
    return authenticate_key(session, raw)


def require_key(*scopes: str) -> Callable[[F], F]:
    """Authenticate the request; the key's kind must be one of `scopes` (403 otherwise)."""

    def decorator(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = resolve_principal(credential_from_request())
            if principal.kind not in scopes:
                raise Forbidden(
                    "This key cannot call this endpoint: a secret key (sk_...) is required"
                )
            g.principal = principal
            return fn(*args, **kwargs)

        wrapper._cairn_scopes = scopes  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def current_project_id() -> int:
    """The authenticated project of this request."""
    return g.principal.project_id


def current_project() -> Project:
    """The authenticated project's row (it exists: its key just authenticated)."""
    project = db.session.get(Project, g.principal.project_id)
    if project is None:
        raise Unauthorized("The project of this key no longer exists")
    return project


def verification(principal: Principal | None = None) -> Verification:
    """Which userIds this request can vouch for (identity verification, see API.md)."""
    principal = principal or g.principal
    if principal.kind == SECRET:
        return Verification.for_secret_key()
    return Verification(
        identity_secret=principal.identity_secret,
        required=principal.identity_required,
        header_hash=request.headers.get(HASH_HEADER),
    )
