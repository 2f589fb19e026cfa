"""Cursor pagination: `?limit=` (≤1000, default 100) and an opaque `?cursor=`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import request
from sqlalchemy import Select
from sqlalchemy.orm import Session

from app.errors import BadRequest

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def page_args() -> tuple[int, int | None]:
    """The requested page size and the last id seen (from the cursor)."""
    raw_limit = request.args.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise BadRequest("limit must be an integer", {"limit": ["not an integer"]}) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be 1-{MAX_LIMIT}", {"limit": [f"1-{MAX_LIMIT}"]})
    cursor = request.args.get("cursor")
    return limit, decode_cursor(cursor) if cursor else None


def encode_cursor(last_id: int) -> str:
    """An opaque cursor for the row after `last_id`."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id inside a cursor; a malformed one is a 400 naming `cursor`."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "id":
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("malformed cursor", {"cursor": ["malformed"]}) from None


def paginate(session: Session, stmt: Select[Any], limit: int) -> tuple[list[Any], str | None]:
    """One page of an id-ordered statement and the cursor of the next page (None at the end)."""
    rows = list(session.scalars(stmt.limit(limit + 1)))
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id)
    return rows, None
