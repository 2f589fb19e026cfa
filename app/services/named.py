"""Resources a project names (segments, audiences, templates): unique names, id-or-name lookup."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import BadRequest, Conflict, NotFound

MAX_ID = 2**63 - 1  # BIGINT: the databases refuse a larger number, so no row has it
MAX_ID_DIGITS = len(str(MAX_ID))


def is_id(ref: str) -> bool:
    """True when a reference is a row id (ASCII digits) rather than a name.

    Names are never all digits (`name_problem`), so every digit string reads as an id, even
    one too large for any row (`id_problem` says so).
    """
    return ref.isascii() and ref.isdigit()


def id_problem(ref: Any) -> str | None:
    """Why an integer or digit-string reference cannot be an id (None when it can)."""
    if isinstance(ref, str):
        if not is_id(ref):
            return None
        if len(ref) > MAX_ID_DIGITS:
            return f"out of range: ids are at most {MAX_ID}"
        ref = int(ref)
    if isinstance(ref, int) and not isinstance(ref, bool) and not -MAX_ID - 1 <= ref <= MAX_ID:
        return f"out of range: ids are at most {MAX_ID}"
    return None


def find_named(
    session: Session, model: Any, *, project_id: int, ref: str | int, field: str = "id"
) -> Any | None:
    """The project's row by numeric id or by name, or None; an impossible id is a 400."""
    problem = id_problem(ref)
    if problem is not None:
        raise BadRequest(f"{field} {ref} is {problem}", {field: [problem]})
    column = model.id == int(ref) if isinstance(ref, int) or is_id(ref) else model.name == ref
    return session.scalar(select(model).where(model.project_id == project_id, column))


def find_reference(session: Session, model: Any, project_id: int, ref: Any) -> Any | None:
    """A reference inside a rule or journey body (an id, a whole float such as JSON's `3.0`, or
    a name): the project's row, or None, also for an id no row can have (the caller's 404)."""
    if isinstance(ref, float) and ref.is_integer():
        ref = int(ref)
    if isinstance(ref, int) or is_id(ref):
        if int(ref) > MAX_ID:
            return None
        column = model.id == int(ref)
    else:
        column = model.name == ref.strip()
    return session.scalar(select(model).where(model.project_id == project_id, column))


def get_named(
    session: Session, model: Any, *, project_id: int, ref: str | int, kind: str, field: str = "id"
) -> Any:
    """The project's row by numeric id or by name, or NotFound naming `kind`."""
    row = find_named(session, model, project_id=project_id, ref=ref, field=field)
    if row is None:
        raise NotFound(f"{kind} {ref!r} not found", {"id": ["not found"]})
    return row


def name_taken(kind: str, name: str) -> Conflict:
    """The 409 for a taken name (`name/exists`)."""
    article = "an" if kind[0] in "aeiou" else "a"
    return Conflict(
        f"name/exists: {article} {kind} named {name!r} already exists", {"name": ["name/exists"]}
    )


def ensure_name_free(
    session: Session,
    model: Any,
    *,
    project_id: int,
    name: str,
    kind: str,
    exclude_id: int | None = None,
) -> None:
    """Conflict if another row of the project already has this name."""
    stmt = select(model.id).where(model.project_id == project_id, model.name == name)
    if exclude_id is not None:
        stmt = stmt.where(model.id != exclude_id)
    if session.scalar(stmt) is not None:
        raise name_taken(kind, name)


def flush_named(session: Session, *, name: str, kind: str) -> None:
    """Flush; a concurrent request that took the name first becomes a 409, not a 500."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise name_taken(kind, name) from None


def list_named_query(model: Any, project_id: int, *, after_id: int | None = None) -> Select[Any]:
    """The project's rows in id order, after the cursor's id."""
    stmt = select(model).where(model.project_id == project_id).order_by(model.id)
    if after_id is not None:
        stmt = stmt.where(model.id > after_id)
    return stmt


MAX_NAME_LENGTH = 255


def name_problem(name: Any, *, forbidden: str = "/") -> tuple[str, str | None]:
    """The stripped name and why it cannot be used (None when it can).

    An all-digit name would read as an id in `/{id}` paths, hence refused; `forbidden` lists
    characters that mean something else where the name is used (`/` in paths).
    """
    if not isinstance(name, str) or not name.strip():
        return "", "required, a non-empty string"
    clean = name.strip()
    if len(clean) > MAX_NAME_LENGTH:
        return clean, f"at most {MAX_NAME_LENGTH} characters"
    if clean.isdecimal():
        return clean, "must not be only digits"
    if any(c in clean for c in forbidden) or any(ord(c) < 32 for c in clean):
        listed = ", ".join(f"'{c}'" for c in forbidden)
        return clean, f"must not contain {listed} or control characters"
    return clean, None
