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
from app.services.projects import Principal, authenticate_key, authenticate_token

F = TypeVar("F", bound=Callable[..., Any])

SECRET = "secret"
PUBLISHABLE = "publishable"


def credential_from_request(*, allow_query: bool = False) -> str | None:
    """The raw key or token: `Bearer x`, Basic-auth user name (Segment SDKs), or `?key=`."""
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
        return request.args.get("key") or None
    return None


def resolve_principal(raw: str | None) -> Principal:
    """Authenticate a raw credential and commit the key's lastUsedAt refresh."""
    if not raw:
        raise Unauthorized("Missing API key: send Authorization: Bearer <key>")
    session = db.session
    if raw.startswith("tk_"):
        principal = authenticate_token(
            session,
            raw,
            secret=current_app.config["SECRET_KEY"],
            max_age=current_app.config["TOKEN_TTL_SECONDS"],
        )
    else:
        principal = authenticate_key(session, raw)
    session.commit()
    return principal


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
