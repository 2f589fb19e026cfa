"""Segments: stored filters, their members, previews, and `?segment=` resolution.

A segment is a filter, not a list: membership is computed when asked, so a user created or
changed after the segment matches at once. Anonymous profiles (no `userId`, external_id NULL)
are never members of any segment, stored or inline: they cannot be addressed by the API and
a filter over them would leak cookies into counts and sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

from app import jsontext
from app.errors import InvalidInput, NotFound
from app.models import Segment, User
from app.models.base import utcnow
from app.segment_sql import compile_filter
from app.services.named import (
    ensure_name_free,
    find_named,
    flush_named,
    get_named,
    list_named_query,
    name_problem,
)
from journeys.filters import Condition, FilterError, error_path, has_nul, parse_filter, to_json
from workers.channels import reachability_clauses

PREVIEW_SAMPLE = 10
# Ids are BIGINT on PostgreSQL: a longer run of digits cannot be an id.


# --- filters ------------------------------------------------------------------------------


def parse_segment_filter(raw: Any, field: str = "filter") -> Condition:
    """Parse any of the three forms; InvalidInput names the node (`filter.all[1].op`).

    For the string form the message also gives the 0-based character position.
    """
    if raw is None:
        raise InvalidInput(f"{field} is required", {field: ["required"]})
    if has_nul(raw):
        raise InvalidInput(f"{field} contains a NUL character", {field: ["contains NUL"]})
    try:
        return parse_filter(raw)
    except FilterError as err:
        path = error_path(field, err.path)
        raise InvalidInput(
            f"Invalid {field}: {path}: {err.message}", {path: [err.message]}
        ) from None


def members_clause(
    cond: Condition, *, project_id: int, dialect_name: str, now: datetime
) -> ColumnElement[bool]:
    """A WHERE clause over `users`: the project's identified users the filter accepts at `now`."""
    return and_(
        User.project_id == project_id,
        User.external_id.is_not(None),
        compile_filter(
            cond,
            project_id=project_id,
            dialect_name=dialect_name,
            now=now,
            channel_clauses=reachability_clauses(),
        ),
    )


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# --- stored segments ----------------------------------------------------------------------


def _invalid(errors: dict[str, list[str]]) -> InvalidInput:
    shown = "; ".join(f"{path}: {why[0]}" for path, why in errors.items())
    return InvalidInput(f"Invalid segment: {shown}", errors)


def _clean_name(name: Any) -> str:
    # `?segment=` reads text with ':' as a string-form filter and `{`/`[` as JSON.
    clean, why = name_problem(name, forbidden="/:")
    if why is None and clean[0] in "{[":
        why = "must not start with '{' or '[' (read as a JSON filter)"
    if why:
        raise _invalid({"name": [why]})
    return clean


def create_segment(session: Session, *, project_id: int, name: Any, filter: Any) -> Segment:
    """Validate and store a segment with its filter normalized to the JSON tree."""
    clean_name = _clean_name(name)
    tree = to_json(parse_segment_filter(filter))
    ensure_name_free(session, Segment, project_id=project_id, name=clean_name, kind="segment")
    now = utcnow()
    segment = Segment(
        project_id=project_id, name=clean_name, filter=tree, created_at=now, updated_at=now
    )
    session.add(segment)
    flush_named(session, name=clean_name, kind="segment")
    return segment


def update_segment(
    session: Session, *, project_id: int, ref: str, changes: Mapping[str, Any], replace: bool
) -> Segment:
    """PUT (`replace`: name and filter both required) or PATCH (the given fields)."""
    segment = get_segment(session, project_id=project_id, ref=ref)
    if replace:
        missing = {k: ["required"] for k in ("name", "filter") if k not in changes}
        if missing:
            raise _invalid(missing)
    name = _clean_name(changes["name"]) if "name" in changes else segment.name
    if "filter" in changes:
        segment.filter = to_json(parse_segment_filter(changes["filter"]))
    if name != segment.name:
        ensure_name_free(
            session,
            Segment,
            project_id=project_id,
            name=name,
            kind="segment",
            exclude_id=segment.id,
        )
        segment.name = name
    segment.updated_at = utcnow()
    flush_named(session, name=name, kind="segment")
    return segment


def delete_segment(session: Session, *, project_id: int, ref: str) -> None:
    """Remove a segment; NotFound if the project has none by that id or name."""
    session.delete(get_segment(session, project_id=project_id, ref=ref))
    session.flush()


def find_segment(
    session: Session, *, project_id: int, ref: str, field: str = "id"
) -> Segment | None:
    """A segment of the project by numeric id or by name, or None."""
    segment: Segment | None = find_named(
        session, Segment, project_id=project_id, ref=ref, field=field
    )
    return segment


def get_segment(session: Session, *, project_id: int, ref: str) -> Segment:
    """A segment of the project by numeric id or by name, or NotFound."""
    segment: Segment = get_named(session, Segment, project_id=project_id, ref=ref, kind="segment")
    return segment


def list_segments_query(project_id: int, *, after_id: int | None = None) -> Select[Any]:
    """The project's segments in id order, after the cursor's id."""
    return list_named_query(Segment, project_id, after_id=after_id)


def condition_of(segment: Segment) -> Condition:
    """The stored filter as a condition tree."""
    return parse_filter(segment.filter)


# --- members ------------------------------------------------------------------------------


def segment_members_query(
    session: Session,
    *,
    project_id: int,
    cond: Condition,
    after_id: int | None = None,
    now: datetime | None = None,
) -> Select[tuple[User]]:
    """Members in user row id order after a cursor; add a LIMIT, the database streams it."""
    clause = members_clause(
        cond, project_id=project_id, dialect_name=_dialect(session), now=now or utcnow()
    )
    stmt = select(User).where(clause).order_by(User.id)
    if after_id is not None:
        stmt = stmt.where(User.id > after_id)
    return stmt


def preview_segment(
    session: Session, *, project_id: int, filter: Any, now: datetime | None = None
) -> dict[str, Any]:
    """How many users a filter selects now, and the userIds of the first few (by row id)."""
    cond = parse_segment_filter(filter)
    clause = members_clause(
        cond, project_id=project_id, dialect_name=_dialect(session), now=now or utcnow()
    )
    count = session.scalar(select(func.count()).select_from(User).where(clause)) or 0
    sample = list(
        session.scalars(
            select(User.external_id).where(clause).order_by(User.id).limit(PREVIEW_SAMPLE)
        )
    )
    return {"count": count, "sample": sample}


def resolve_segment(
    session: Session, *, project_id: int, raw: str, field: str = "segment"
) -> Condition:
    """The filter a `?segment=` value means: a stored segment's id or name, or any inline form.

    Digits are an id; text starting with `{` or `[` is a JSON object or tree; text with `:`
    is the string form; anything else is a name. Segment names can be none of the first
    three (see `_clean_name`), so the reading is never ambiguous.
    """
    if not raw.strip():
        raise InvalidInput(f"{field} must not be empty", {field: ["empty"]})
    stripped = raw.strip()
    if stripped[0] in "{[":
        try:
            decoded, suspect = jsontext.loads(stripped)
        except jsontext.JSONTextError as err:
            raise InvalidInput(f"{field} is not valid JSON: {err}", {field: [err.reason]}) from None
        problems = jsontext.value_problems(decoded) if suspect else {}
        if problems:
            where, [reason] = next(iter(problems.items()))
            raise InvalidInput(f"{field}.{where}: {reason}", {f"{field}.{where}": [reason]})
        return parse_segment_filter(decoded, field)
    if ":" in raw:
        return parse_segment_filter(raw, field)
    segment = find_segment(session, project_id=project_id, ref=stripped, field=field)
    if segment is None:
        raise NotFound(
            f"no segment with id or name {raw!r} (an inline filter is key:value)",
            {field: ["not found"]},
        )
    return condition_of(segment)


def segment_clause(
    session: Session, project_id: int, raw: str, *, now: datetime | None = None
) -> ColumnElement[bool]:
    """A WHERE clause over `users` for a `?segment=` value (see `resolve_segment`)."""
    cond = resolve_segment(session, project_id=project_id, raw=raw)
    return members_clause(
        cond, project_id=project_id, dialect_name=_dialect(session), now=now or utcnow()
    )
