"""Console accounts: one-time setup and invitation links, logins, roles and the audit log.

The installation's first account comes from a one-time link printed by `cairn serve` while no
account exists (only the token's hash is stored; a new start prints a new link and the older
ones stop working). That account is an *owner*: admin of every project. Other people join a
project through an invitation link with a role (`admin`, `marketer`, `viewer`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, NotFound
from app.models import Project
from app.models.base import utcnow
from app.models.console import ROLES, AuditEntry, ConsoleInvite, ConsoleMembership, ConsoleUser
from app.services.profiles import normalize_email

MIN_PASSWORD = 10
MAX_PASSWORD = 1000
SETUP_LINK_TTL = timedelta(days=1)
INVITE_TTL = timedelta(days=7)
# What each role may do; a role can do everything the roles after it in ROLES can.
RANK = {role: len(ROLES) - i for i, role in enumerate(ROLES)}

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def check_password(password: Any, field: str = "password") -> str:
    """The password, or a 422 naming `field` when it is too short or too long."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(
            "The password is too short",
            {field: [f"at least {MIN_PASSWORD} characters"]},
        )
    if len(password) > MAX_PASSWORD:
        raise InvalidInput("The password is too long", {field: [f"at most {MAX_PASSWORD}"]})
    return password


def _clean_email(raw: Any, field: str = "email") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("An email address is required", {field: ["required"]})
    try:
        return normalize_email(raw.strip()).lower()
    except ValueError as err:
        raise InvalidInput("Not a valid email address", {field: [str(err)]}) from None


def has_accounts(session: Session) -> bool:
    """Whether any console account exists."""
    return session.scalar(select(func.count()).select_from(ConsoleUser)) != 0


def create_setup_link(session: Session, *, public_url: str, now: datetime | None = None) -> str:
    """A new one-time link to create the first owner; earlier unused setup links stop working."""
    now = now or utcnow()
    session.execute(
        delete(ConsoleInvite).where(
            ConsoleInvite.project_id.is_(None), ConsoleInvite.used_at.is_(None)
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(ConsoleInvite(token_hash=_digest(token), expires_at=now + SETUP_LINK_TTL))
    session.flush()
    return f"{public_url}/setup/{token}"


def create_invite(
    session: Session,
    *,
    project_id: int,
    role: Any,
    email: Any,
    created_by: int,
    public_url: str,
    now: datetime | None = None,
) -> str:
    """A one-time link inviting `email` to the project with `role`."""
    if role not in ROLES:
        raise InvalidInput("Unknown role", {"role": [f"one of {', '.join(ROLES)}"]})
    address = _clean_email(email)
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleInvite(
            token_hash=_digest(token),
            project_id=project_id,
            role=role,
            email=address,
            created_by=created_by,
            expires_at=(now or utcnow()) + INVITE_TTL,
        )
    )
    session.flush()
    return f"{public_url}/setup/{token}"


def find_invite(session: Session, token: str, now: datetime | None = None) -> ConsoleInvite:
    """The invite behind a link, if it is unused and not expired (404 otherwise)."""
    invite = session.scalar(select(ConsoleInvite).where(ConsoleInvite.token_hash == _digest(token)))
    if invite is None or invite.used_at is not None or invite.expires_at <= (now or utcnow()):
        raise NotFound("This link is not valid: it was used, replaced or has expired")
    return invite


def accept_invite(
    session: Session, *, token: str, email: Any, name: Any, password: Any
) -> ConsoleUser:
    """Create the account the link is for (the first owner, or an invited member); an existing
    account joins the invited project when its password is given."""
    invite = find_invite(session, token)
    address = _clean_email(invite.email or email)
    check_password(password)
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == address))
    if invite.project_id is None:
        if has_accounts(session):
            raise Conflict("The first account was already created: log in")
        user = ConsoleUser(
            email=address, name=_name(name), password_hash=hash_password(password), is_owner=True
        )
        session.add(user)
    elif user is None:
        user = ConsoleUser(email=address, name=_name(name), password_hash=hash_password(password))
        session.add(user)
    elif not _verify(user, password):
        raise InvalidInput(
            "An account with this email exists: give its password to join",
            {"password": ["not this account's password"]},
        )
    session.flush()
    if invite.project_id is not None:
        membership = session.scalar(
            select(ConsoleMembership).where(
                ConsoleMembership.console_user_id == user.id,
                ConsoleMembership.project_id == invite.project_id,
            )
        )
        if membership is None:
            session.add(
                ConsoleMembership(
                    console_user_id=user.id, project_id=invite.project_id, role=invite.role
                )
            )
        else:
            membership.role = invite.role or membership.role
    invite.used_at = utcnow()
    session.flush()
    return user


def _name(raw: Any) -> str:
    return raw.strip()[:200] if isinstance(raw, str) else ""


def _verify(user: ConsoleUser, password: str) -> bool:
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return True


def authenticate(session: Session, *, email: Any, password: Any) -> ConsoleUser | None:
    """The account these credentials log in to, or None (unknown email, wrong password or a
    disabled account all look the same)."""
    if not isinstance(email, str) or not isinstance(password, str) or not password:
        return None
    address = email.strip().lower()
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == address))
    if user is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY_HASH, password)
        return None
    if not _verify(user, password) or user.disabled_at is not None:
        return None
    user.last_login_at = utcnow()
    return user


@dataclass(frozen=True)
class ProjectAccess:
    """A project the account may open, and its role there."""

    id: int
    name: str
    role: str


def projects_of(session: Session, user: ConsoleUser) -> list[ProjectAccess]:
    """The projects this account may open, by id; an owner is admin of every project."""
    if user.is_owner:
        rows = session.execute(select(Project.id, Project.name).order_by(Project.id))
        return [ProjectAccess(pid, name, "admin") for pid, name in rows]
    rows = session.execute(
        select(Project.id, Project.name, ConsoleMembership.role)
        .join(ConsoleMembership, ConsoleMembership.project_id == Project.id)
        .where(ConsoleMembership.console_user_id == user.id)
        .order_by(Project.id)
    )
    return [ProjectAccess(pid, name, role) for pid, name, role in rows]


def role_in(session: Session, user: ConsoleUser, project_id: int) -> str | None:
    """The account's role in the project, None when it has none."""
    if user.is_owner:
        exists = session.get(Project, project_id) is not None
        return "admin" if exists else None
    return session.scalar(
        select(ConsoleMembership.role).where(
            ConsoleMembership.console_user_id == user.id,
            ConsoleMembership.project_id == project_id,
        )
    )


def may(role: str | None, needed: str) -> bool:
    """Whether `role` allows what `needed` allows (admin ⊇ marketer ⊇ viewer)."""
    return role is not None and RANK[role] >= RANK[needed]


def record_audit(
    session: Session,
    *,
    user: ConsoleUser,
    project_id: int | None,
    action: str,
    object_type: str,
    object_id: Any = None,
    summary: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Write one audit log entry for a change the account made."""
    entry = AuditEntry(
        project_id=project_id,
        console_user_id=user.id,
        actor=user.email,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        summary=summary,
        before=_plain(before),
        after=_plain(after),
    )
    session.add(entry)
    session.flush()
    return entry


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """JSON-safe (times as ISO text) for the log's JSON columns."""
    if value is None:
        return None
    return json.loads(json.dumps(dict(value), default=_iso))


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def audit_entries(
    session: Session, *, project_id: int, before_id: int | None = None, limit: int = 50
) -> list[AuditEntry]:
    """The project's audit log, newest first."""
    stmt = select(AuditEntry).where(AuditEntry.project_id == project_id)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    return list(session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit)))
