"""Erasure (GDPR): delete profiles and strip their events of anything personal."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.models import Event, Project, User
from app.services.identity import USER_DEVICES, USER_OWNED, user_column
from app.services.profiles import FieldError, normalize_email, normalize_phone


@dataclass
class EraseRequest:
    """Who to erase: any mix of userIds, emails and phones."""

    user_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_ids) + len(self.emails) + len(self.phones)


def erase_users(session: Session, *, project: Project, request: EraseRequest) -> int:
    """GDPR erasure: delete the profiles and strip their events of anything personal."""
    emails, phones = [], []
    for raw in request.emails:
        try:
            emails.append(normalize_email(raw))
        except FieldError:
            emails.append(raw)
    for raw in request.phones:
        try:
            phones.append(normalize_phone(raw, project.default_region))
        except FieldError:
            phones.append(raw)
    clauses = []
    if request.user_ids:
        clauses.append(User.external_id.in_(request.user_ids))
    if emails:
        clauses.append(User.email.in_(emails))
    if phones:
        clauses.append(User.phone.in_(phones))
    if not clauses:
        return 0
    ids = list(session.scalars(select(User.id).where(User.project_id == project.id, or_(*clauses))))
    if not ids:
        return 0
    session.execute(
        update(Event)
        .where(Event.project_id == project.id, Event.user_id.in_(ids))
        .values(user_id=None, properties={}, erased=True),
        execution_options={"synchronize_session": False},
    )
    for model, column in [*USER_OWNED, *USER_DEVICES]:
        if model is Event:
            continue
        session.execute(
            delete(model).where(user_column(model, column).in_(ids)),
            execution_options={"synchronize_session": False},
        )
    session.execute(
        delete(User).where(User.id.in_(ids)), execution_options={"synchronize_session": False}
    )
    session.flush()
    return len(ids)
