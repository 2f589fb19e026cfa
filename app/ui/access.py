"""Who may open which console page: a login, then a role in the page's project."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TypeVar

from flask import g
from flask_login import current_user, login_required
from sqlalchemy import select

from app.db import db
from app.errors import Forbidden, NotFound
from app.models import Project
from app.services import console_accounts as accounts

F = TypeVar("F", bound=Callable[..., Any])


def project_page(needed: str = "viewer") -> Callable[[F], F]:
    """A view under /projects/<pid>/: 404 for a project the account cannot see, 403 when its
    role there is below `needed` (a viewer cannot change anything)."""

    def decorator(fn: F) -> F:
        @wraps(fn)
        def wrapper(pid: int, *args: Any, **kwargs: Any) -> Any:
            row = current_user.row
            role = accounts.role_in(db.session, row, pid)
            if role is None:
                raise NotFound("No such project, or you have no access to it")
            if not accounts.may(role, needed):
                raise Forbidden(
                    f"Your role in this project is {role}: this needs {needed} or above"
                )
            g.project = db.session.get(Project, pid)
            g.role = role
            g.projects = accounts.projects_of(db.session, row)
            return fn(pid, *args, **kwargs)

        return login_required(wrapper)  # type: ignore[return-value]

    return decorator


def can(needed: str) -> bool:
    """Whether the current page's role allows `needed` (templates hide what it does not)."""
    return accounts.may(g.get("role"), needed)


def require(needed: str, message: str) -> None:
    """Refuse (403, `message`) a change the current page's role does not allow."""
    if not can(needed):
        raise Forbidden(message)


def names_by_id(model: Any, pid: int, ids: Iterable[int] | None = None) -> dict[int, str]:
    """`{id: name}` of a project's named rows (templates, audiences, campaigns...), all of them
    or only `ids` (one query; none for an empty `ids`)."""
    stmt = select(model.id, model.name).where(model.project_id == pid)
    if ids is not None:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        stmt = stmt.where(model.id.in_(wanted))
    return {row_id: name for row_id, name in db.session.execute(stmt)}


def audit(action: str, object_type: str, object_id: Any = None, **kwargs: Any) -> None:
    """Record a change the logged-in account made in the current project."""
    accounts.record_audit(
        db.session,
        user=current_user.row,
        project_id=g.project.id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        **kwargs,
    )
