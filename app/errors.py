"""Domain errors and the one handler that gives every error the API.md JSON shape."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, jsonify
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class DomainError(Exception):
    """Root of Cairn's errors that map onto an HTTP answer."""

    code = 400

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


class InvalidInput(DomainError):
    """The input is well-formed JSON but a field is wrong; `errors` names the field."""

    code = 422


class BadRequest(DomainError):
    """The request itself is malformed."""

    code = 400


class Unauthorized(DomainError):
    """Missing, unknown, revoked or expired credentials."""

    code = 401


class Forbidden(DomainError):
    """The credentials are valid but lack the scope."""

    code = 403


class NotFound(DomainError):
    """The resource does not exist in this project."""

    code = 404


# The field error of a reference (an id or name) that names nothing in the project.
NOT_FOUND = "not found"


def invalid_or_missing(message: str, errors: dict[str, list[str]]) -> DomainError:
    """The error for a body's field errors: a 404 when every one is a reference that names
    nothing (`NOT_FOUND`: the body is valid, what it points at is missing), else a 422."""
    if errors and all(why == [NOT_FOUND] for why in errors.values()):
        return NotFound(message, errors)
    return InvalidInput(message, errors)


class Conflict(DomainError):
    """The resource already exists (`id/exists`)."""

    code = 409


class TooLarge(DomainError):
    """A body, an item or a batch is over its limit."""

    code = 413


def error_body(code: int, message: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON error shape of API.md."""
    return {
        "code": code,
        "status": HTTPStatus(code).phrase,
        "message": message,
        "errors": errors or {},
    }


def _respond(code: int, message: str, errors: dict[str, Any] | None = None, headers=None):
    response = jsonify(error_body(code, message, errors))
    response.status_code = code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten_marshmallow(messages: Any) -> dict[str, Any]:
    """Marshmallow's nested errors as the API names fields: `userIds[1]`, `settings.quietHours`.

    flask-smorest nests errors by location (`json`, `query`); the field names go on top. A
    batch keeps its item index as the top key (`{"0": {"name": [...]}}`), as services do.
    """
    if isinstance(messages, dict) and set(messages) <= {"json", "query", "form", "headers"}:
        merged: dict[str, Any] = {}
        for value in messages.values():
            if isinstance(value, dict):
                merged.update(value)
            else:
                merged["_schema"] = value
        messages = merged
    if not isinstance(messages, dict):
        return {"_schema": messages}
    if messages and all(isinstance(key, int) for key in messages):
        return {str(key): _paths(value, "") for key, value in messages.items()}
    return _paths(messages, "")


def flatten_errors(messages: Any) -> dict[str, Any]:
    """Marshmallow's errors of a schema loaded by hand, keyed as the API names fields."""
    return _flatten_marshmallow(messages)


def _paths(value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        here = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
        flat = _paths(item, here)
        if isinstance(flat, dict):
            out.update(flat)
        else:
            out[here or "_schema"] = flat
    return out


def _first_field(errors: dict[str, Any], path: str = "") -> str:
    for key, value in errors.items():
        here = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
        if isinstance(value, dict):
            return _first_field(value, here)
        return here
    return path


def init_app(app: Flask) -> None:
    """Register the single error handler for HTTP, validation, domain and unexpected errors."""

    @app.errorhandler(DomainError)
    def _domain(err: DomainError):
        return _respond(err.code, err.message, err.errors)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        code = err.code or 500
        data = getattr(err, "data", None) or {}
        messages = data.get("messages")
        if messages is not None:
            errors = _flatten_marshmallow(messages)
            field = _first_field(errors)
            message = f"Invalid input: {field}" if field else "Invalid input"
            return _respond(code, message, errors, data.get("headers"))
        if code == 413:
            message = "Request body too large"
        else:
            message = err.description or HTTPStatus(code).phrase
        headers = dict(err.get_headers()) if code in (405, 429) else None
        if headers:
            headers.pop("Content-Type", None)
        return _respond(code, message, None, headers)

    @app.errorhandler(OperationalError)
    def _db_down(err: OperationalError):
        log.error("database unavailable: %s", err)
        return _respond(503, "Database unavailable, retry later", None, {"Retry-After": "5"})

    @app.errorhandler(DataError)
    def _bad_value(err: DataError):
        # The database refused a value the validators let through (e.g. NUL in a path id).
        log.warning("database refused a value: %s", err.orig)
        return _respond(400, "A value in the request cannot be stored")

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return _respond(500, "Internal server error")
