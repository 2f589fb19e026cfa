"""User profiles: upsert with attribute merge, lookup, listing, erasure and identity merge."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.errors import InvalidInput, NotFound
from app.models import AnonymousId, Event, Project, User
from app.models.base import utcnow
from app.services.profiles import (
    FieldError,
    normalize_email,
    normalize_language,
    normalize_phone,
    normalize_timezone,
)

RESERVED = ("email", "phone", "language", "timezone")
# Aliases inside `attributes` from APIs clients migrate from.
ATTRIBUTE_ALIASES = {"$email": "email", "$phone_number": "phone"}
MAX_ID_LENGTH = 255

# Every table whose rows belong to a user and must follow it when profiles merge.
# Later models append (Model, "column") here rather than editing merge_users.
USER_OWNED: list[tuple[Any, str]] = [(Event, "user_id"), (AnonymousId, "user_id")]


@dataclass
class ProfileChange:
    """A validated change to one profile: reserved fields and attribute patch."""

    user_id: str
    fields: dict[str, str | None] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class UpsertResult:
    """Per-item outcome of an upsert, in request order."""

    index: int
    user_id: str | None
    ok: bool
    created: bool = False
    errors: dict[str, Any] | None = None


def parse_profile_change(item: Any, *, default_region: str | None) -> ProfileChange:
    """Validate one upsert item; raises InvalidInput whose `errors` name the fields."""
    if not isinstance(item, dict):
        raise InvalidInput("expected an object", {"_schema": ["expected an object"]})
    errors: dict[str, list[str]] = {}
    user_id = item.get("userId")
    if not isinstance(user_id, str) or not user_id.strip():
        errors["userId"] = ["required, a non-empty string"]
    elif len(user_id) > MAX_ID_LENGTH:
        errors["userId"] = [f"at most {MAX_ID_LENGTH} characters"]
    attributes = item.get("attributes", {})
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        errors["attributes"] = ["must be an object"]
        attributes = {}
    unknown = set(item) - {"userId", "attributes", *RESERVED, "anonymousId"}
    for name in sorted(unknown):
        errors[name] = ["unknown field"]
    raw_fields: dict[str, Any] = {}
    for alias, name in ATTRIBUTE_ALIASES.items():
        if alias in attributes:
            raw_fields[name] = attributes[alias]
    attributes = {k: v for k, v in attributes.items() if k not in ATTRIBUTE_ALIASES}
    for name in RESERVED:
        if name in item:
            raw_fields[name] = item[name]
    clean: dict[str, str | None] = {}
    for name, value in raw_fields.items():
        where = name if name in item else next(a for a, n in ATTRIBUTE_ALIASES.items() if n == name)
        where = where if name in item else f"attributes.{where}"
        if value is None:
            clean[name] = None
            continue
        if not isinstance(value, str):
            errors[where] = ["must be a string or null"]
            continue
        try:
            clean[name] = normalize_field(name, value, default_region)
        except FieldError as err:
            errors[where] = [str(err)]
    for key in attributes:
        if not key or len(key) > MAX_ID_LENGTH:
            errors[f"attributes.{key}"] = ["attribute names are 1-255 characters"]
    if errors:
        raise InvalidInput("Invalid user: " + ", ".join(sorted(errors)), errors)
    assert isinstance(user_id, str)
    return ProfileChange(user_id=user_id, fields=clean, attributes=attributes)


def normalize_field(name: str, value: str, default_region: str | None) -> str:
    """Normalize one reserved field's value; raises FieldError."""
    if name == "email":
        return normalize_email(value)
    if name == "phone":
        return normalize_phone(value, default_region)
    if name == "language":
        return normalize_language(value)
    return normalize_timezone(value)


def merge_attributes(stored: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Shallow merge where `null` removes a key."""
    merged = dict(stored or {})
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def apply_change(user: User, change: ProfileChange, now: datetime) -> None:
    """Apply a validated change to a loaded profile."""
    for name, value in change.fields.items():
        setattr(user, name, value)
    if change.attributes:
        # Assign a new dict: JSON columns do not track in-place mutation.
        user.attributes = merge_attributes(user.attributes, change.attributes)
    user.updated_at = now


def upsert_users(session: Session, *, project: Project, items: Sequence[Any]) -> list[UpsertResult]:
    """Create or update each item's profile; invalid items are reported, the rest applied."""
    results: list[UpsertResult] = []
    changes: list[tuple[int, ProfileChange]] = []
    for index, item in enumerate(items):
        try:
            change = parse_profile_change(item, default_region=project.default_region)
        except InvalidInput as err:
            uid = item.get("userId") if isinstance(item, dict) else None
            results.append(
                UpsertResult(index, uid if isinstance(uid, str) else None, False, errors=err.errors)
            )
            continue
        changes.append((index, change))
        results.append(UpsertResult(index, change.user_id, True))
    if not changes:
        return results
    ids = {c.user_id for _, c in changes}
    existing = load_users_by_external_id(session, project.id, ids)
    now = utcnow()
    for index, change in changes:
        user = existing.get(change.user_id)
        if user is None:
            user = _create_user(session, project.id, change.user_id, now)
            results[index].created = user.created_at == now
            existing[change.user_id] = user
        apply_change(user, change, now)
    session.flush()
    return results


def _create_user(session: Session, project_id: int, external_id: str, now: datetime) -> User:
    """Insert a profile, or load it if a concurrent request created it first."""
    stmt = insert_ignore(session, User, ["project_id", "external_id"]).values(
        project_id=project_id,
        external_id=external_id,
        attributes={},
        created_at=now,
        updated_at=now,
    )
    session.execute(stmt)
    user = session.scalar(
        select(User).where(User.project_id == project_id, User.external_id == external_id)
    )
    assert user is not None
    return user


def load_users_by_external_id(
    session: Session, project_id: int, external_ids: Iterable[str]
) -> dict[str, User]:
    """Profiles by userId, in chunks that stay under bind-parameter limits."""
    out: dict[str, User] = {}
    ids = list(external_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = session.scalars(
            select(User).where(User.project_id == project_id, User.external_id.in_(chunk))
        )
        out.update({u.external_id: u for u in rows if u.external_id is not None})
    return out


def ensure_user_ids(
    session: Session, project_id: int, external_ids: Iterable[str], now: datetime
) -> dict[str, int]:
    """Row ids for userIds, creating missing profiles in one statement (first sight)."""
    wanted = list(dict.fromkeys(external_ids))
    found: dict[str, int] = {}
    for attempt in range(2):
        missing = [e for e in wanted if e not in found]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            rows = session.execute(
                select(User.external_id, User.id).where(
                    User.project_id == project_id, User.external_id.in_(chunk)
                )
            )
            found.update({e: i for e, i in rows if e is not None})
        missing = [e for e in wanted if e not in found]
        if not missing or attempt:
            break
        session.execute(
            insert_ignore(session, User, ["project_id", "external_id"]),
            [
                {
                    "project_id": project_id,
                    "external_id": e,
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for e in missing
            ],
        )
    return found


def ensure_anonymous_ids(
    session: Session, project_id: int, anonymous_ids: Iterable[str], now: datetime
) -> dict[str, int]:
    """Row ids of the profiles behind anonymous ids, creating anonymous profiles as needed."""
    wanted = list(dict.fromkeys(anonymous_ids))
    found = _anonymous_owners(session, project_id, wanted)
    for anon in wanted:
        if anon in found:
            continue
        user = User(
            project_id=project_id, external_id=None, attributes={}, created_at=now, updated_at=now
        )
        session.add(user)
        session.flush()
        inserted = session.scalar(
            insert_ignore(session, AnonymousId, ["project_id", "anonymous_id"])
            .values(project_id=project_id, anonymous_id=anon, user_id=user.id, created_at=now)
            .returning(AnonymousId.id)
        )
        if inserted is None:  # a concurrent request mapped it first: use theirs
            session.delete(user)
            found.update(_anonymous_owners(session, project_id, [anon]))
        else:
            found[anon] = user.id
    return found


def _anonymous_owners(session: Session, project_id: int, anon_ids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for start in range(0, len(anon_ids), 500):
        chunk = anon_ids[start : start + 500]
        rows = session.execute(
            select(AnonymousId.anonymous_id, AnonymousId.user_id).where(
                AnonymousId.project_id == project_id, AnonymousId.anonymous_id.in_(chunk)
            )
        )
        out.update({anon: uid for anon, uid in rows})
    return out


def merge_users(session: Session, *, source: User, target: User) -> None:
    """Fold `source` into `target`: its rows move over, target's values win on conflict."""
    if source.id == target.id:
        return
    target.attributes = {**(source.attributes or {}), **(target.attributes or {})}
    for name in RESERVED:
        if getattr(target, name) is None and getattr(source, name) is not None:
            setattr(target, name, getattr(source, name))
    target.created_at = min(target.created_at, source.created_at)
    if source.last_seen_at and (
        not target.last_seen_at or source.last_seen_at > target.last_seen_at
    ):
        target.last_seen_at = source.last_seen_at
    target.updated_at = utcnow()
    for model, column in USER_OWNED:
        col = getattr(model, column)
        session.execute(
            update(model).where(col == source.id).values({column: target.id}),
            execution_options={"synchronize_session": False},
        )
    session.flush()
    session.delete(source)
    session.flush()


def identify(
    session: Session,
    *,
    project: Project,
    user_id: str,
    anonymous_id: str | None = None,
    previous_id: str | None = None,
    change: ProfileChange | None = None,
) -> User:
    """Make sure `user_id` exists and absorb an anonymous id or a previous id into it."""
    now = utcnow()
    user = load_users_by_external_id(session, project.id, [user_id]).get(user_id)
    if user is None:
        user = _create_user(session, project.id, user_id, now)
    for other_id in (anonymous_id, previous_id):
        if other_id:
            _absorb(session, project.id, user, other_id, now, as_user_id=other_id == previous_id)
    if change is not None:
        apply_change(user, change, now)
    session.flush()
    return user


def _absorb(
    session: Session, project_id: int, user: User, other_id: str, now: datetime, *, as_user_id: bool
) -> None:
    if as_user_id and other_id != user.external_id:
        previous = load_users_by_external_id(session, project_id, [other_id]).get(other_id)
        if previous is not None:
            merge_users(session, source=previous, target=user)
            return
    mapping = session.scalar(
        select(AnonymousId).where(
            AnonymousId.project_id == project_id, AnonymousId.anonymous_id == other_id
        )
    )
    if mapping is None:
        session.execute(
            insert_ignore(session, AnonymousId, ["project_id", "anonymous_id"]).values(
                project_id=project_id, anonymous_id=other_id, user_id=user.id, created_at=now
            )
        )
        return
    if mapping.user_id == user.id:
        return
    owner = session.get(User, mapping.user_id)
    if owner is not None and owner.external_id is None:
        # An anonymous profile: everything it did becomes the known user's.
        merge_users(session, source=owner, target=user)
    else:
        # The anonymous id was already tied to another known user: it moves, their past stays.
        mapping.user_id = user.id


def get_user(session: Session, *, project_id: int, user_id: str) -> User:
    """A profile by userId, or NotFound."""
    user = load_users_by_external_id(session, project_id, [user_id]).get(user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found", {"userId": ["not found"]})
    return user


def anonymous_ids_of(session: Session, user_id: int) -> list[str]:
    """The anonymous ids merged into a profile."""
    return list(
        session.scalars(
            select(AnonymousId.anonymous_id)
            .where(AnonymousId.user_id == user_id)
            .order_by(AnonymousId.id)
        )
    )


def list_users_query(project_id: int, *, after_id: int | None) -> Select[tuple[User]]:
    """Profiles of a project in id order, after a cursor."""
    stmt = select(User).where(User.project_id == project_id).order_by(User.id)
    if after_id is not None:
        stmt = stmt.where(User.id > after_id)
    return stmt


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
    for model, column in USER_OWNED:
        if model is Event:
            continue
        session.execute(
            delete(model).where(getattr(model, column).in_(ids)),
            execution_options={"synchronize_session": False},
        )
    session.execute(
        delete(User).where(User.id.in_(ids)), execution_options={"synchronize_session": False}
    )
    session.flush()
    return len(ids)
