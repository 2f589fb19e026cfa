"""The marketer console: server-rendered pages at `/`, on the same port as the API.

Pages call the same services as the API (`app.services`), so a rule lives in one place. Every
page needs a login (Flask-Login, a signed session cookie); every form and every request the
pages' JavaScript makes that changes something carries the session's CSRF token (Flask-WTF's
`csrf` module), checked before any view runs. Roles are per project (`admin`, `marketer`,
`viewer`), see `app.ui.access`.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, render_template, request
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from werkzeug.exceptions import HTTPException
from wtforms import ValidationError

from app.db import db
from app.errors import DomainError
from app.ui.blueprint import bp, limiter

log = logging.getLogger(__name__)

# One line per page module (each adds its views to `bp`).
PAGES = [
    "describe",
    "auth",
    "home",
    "users",
    "segments",
    "audiences",
    "audience_edit",
    "templates_page",
    "campaigns",
    "journeys",
    "journeys_edit",
    "rules",
    "messages",
    "suppressions",
    "settings",
    "audit",
]

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


class Account:
    """The logged-in console user, as Flask-Login sees it."""

    def __init__(self, row: Any) -> None:
        self.row = row
        self.id = row.id
        self.email = row.email
        self.is_owner = row.is_owner

    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        """A disabled account's sessions end."""
        return self.row.disabled_at is None

    def get_id(self) -> str:
        """The id plus a piece of the password hash: a password change ends other sessions."""
        return f"{self.row.id}:{self.row.password_hash[-16:]}"


def _load_account(session_id: str) -> Account | None:
    from app.models.console import ConsoleUser

    raw_id, _, stamp = session_id.partition(":")
    if not raw_id.isdigit():
        return None
    row = db.session.get(ConsoleUser, int(raw_id))
    if row is None or row.password_hash[-16:] != stamp:
        return None
    return Account(row)


def _check_csrf() -> Any:
    """Refuse a state-changing console request without this session's CSRF token."""
    if request.method not in UNSAFE:
        return None
    token = request.form.get("csrf_token") or request.headers.get("X-CSRFToken")
    try:
        validate_csrf(token)
    except ValidationError as err:
        raise CSRFError(str(err)) from None
    return None


def _error_page(err: Exception) -> Any:
    db.session.rollback()
    if isinstance(err, DomainError):
        code, message = err.code, err.message
    elif isinstance(err, CSRFError):
        code = 400
        message = (
            "This form was not sent from this console session (CSRF token missing or "
            "invalid): reload the page and try again."
        )
    elif isinstance(err, HTTPException):
        code, message = err.code or 500, err.description or ""
        if code == 429:
            message = "Too many attempts: wait a minute and try again."
    else:
        log.exception("console page failed")
        code, message = 500, "Something went wrong on our side; the error is in the server's log."
    if request.accept_mimetypes.best == "application/json" or request.is_json:
        return {"code": code, "message": message}, code
    return render_template("ui/error.html", code=code, message=message), code


def init_app(app: Flask) -> None:
    """Register the console: login manager, rate limiter, CSRF check and the pages."""
    import importlib

    public = app.config.get("PUBLIC_URL", "")
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("SESSION_COOKIE_SECURE", public.startswith("https://"))
    app.config.setdefault("SESSION_COOKIE_NAME", "cairn_session")
    # The token lives as long as the login session (a form left open for an hour still works).
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)

    manager = LoginManager()
    manager.login_view = "ui.login"
    manager.login_message = ""
    manager.user_loader(_load_account)
    manager.init_app(app)
    limiter.init_app(app)

    for name in PAGES:
        importlib.import_module(f"app.ui.{name}")
    app.register_blueprint(bp)


def _console_globals() -> dict[str, Any]:
    return {"csrf_token": generate_csrf, "account": current_user, "ctx": g}


# On the blueprint once, at import: Flask refuses setup calls after its first registration
# (tests build many apps in one process).
bp.before_request(_check_csrf)
for _exc in (DomainError, HTTPException, Exception):
    bp.register_error_handler(_exc, _error_page)
bp.context_processor(_console_globals)
