"""Cursor pagination: `?limit=` (≤1000, default 100) and an opaque `?cursor=`.

A list endpoint takes `PageArgsSchema` as query arguments (documented there, a bad value a
400 naming the field) and pages an id-ordered statement with `paginate`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from app.schemas.common import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    PageArgsSchema,
    decode_cursor,
    encode_cursor,
)

__all__ = [
    "BAD_QUERY",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "PageArgsSchema",
    "decode_cursor",
    "encode_cursor",
    "page_of",
    "paginate",
]

# Bad query parameters are a 400 naming the field (the bodies' schema errors are 422s).
BAD_QUERY: dict[str, Any] = {"location": "query", "error_status_code": 400}


def page_of(args: dict[str, Any]) -> tuple[int, int | None]:
    """The page size and the last id seen, from loaded `PageArgsSchema` arguments."""
    return args["limit"], args.get("cursor")


def paginate(session: Session, stmt: Select[Any], limit: int) -> tuple[list[Any], str | None]:
    """One page of an id-ordered statement and the cursor of the next page (None at the end)."""
    rows = list(session.scalars(stmt.limit(limit + 1)))
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id)
    return rows, None
