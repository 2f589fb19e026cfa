"""User profiles: the reserved fields' validation, upsert with attribute merge, and lookups."""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import langcodes
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, object_session

from app.db import insert_ignore
from app.errors import InvalidInput, NotFound
from app.models import AnonymousId, Project, User
from app.models.base import utcnow
from app.services.rules import note_attribute_changes

RESERVED = ("email", "phone", "language", "timezone")
# The fields that reach a person: only a verified identity may set them (see identity.py).
CONTACT_FIELDS = ("email", "phone")
# Aliases inside `attributes` from APIs clients migrate from.
ATTRIBUTE_ALIASES = {"$email": "email", "$phone_number": "phone"}
MAX_ID_LENGTH = 255


class FieldError(ValueError):
    """A reserved field's value is invalid; the message says why."""


def check_id(value: Any, field_name: str) -> str | None:
    """A userId/anonymousId/previousId as text (integers allowed), or None when absent.

    Raises InvalidInput naming `field_name` for other types (fractions too: `1.5` is no id),
    blank ids and ids over 255 characters.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        value = integer_text(value)
    if value is None:
        raise InvalidInput(
            f"{field_name} must be a string or an integer",
            {field_name: ["must be a string or an integer"]},
        )
    if value.isspace():
        raise InvalidInput(f"{field_name} is blank", {field_name: ["must not be blank"]})
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(
            f"{field_name} is over {MAX_ID_LENGTH} characters",
            {field_name: [f"at most {MAX_ID_LENGTH} characters"]},
        )
    return value


def integer_text(value: Any) -> str | None:
    """The text of a JSON integer (`3` and `3.0`, as JSON Schema counts them), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def normalize_email(raw: str) -> str:
    """A syntactically valid address, lower-cased whole (no DNS lookup).

    The local part is case-sensitive by the RFC but not in practice; lower-casing it makes
    `Ann@x.com` and `ann@x.com` one recipient for deduplication, erasure and suppression.
    """
    try:
        return validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError as err:
        raise FieldError(str(err)) from None


def normalize_phone(raw: str, default_region: str | None) -> str:
    """E.164, using the project's default region for numbers without a country code."""
    try:
        number = phonenumbers.parse(raw, default_region if not raw.startswith("+") else None)
    except phonenumbers.NumberParseException as err:
        hint = "" if default_region else " (no project default region: use +<country code>)"
        raise FieldError(f"not a phone number: {err}{hint}") from None
    if not phonenumbers.is_valid_number(number):
        raise FieldError("not a valid phone number for its region")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_language(raw: str) -> str:
    """A valid BCP 47 tag in its standard form (`en-us` becomes `en-US`)."""
    if not raw or not langcodes.tag_is_valid(raw):
        raise FieldError("not a valid BCP 47 language tag")
    return langcodes.standardize_tag(raw)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def normalize_timezone(raw: str) -> str:
    """A valid IANA time zone name."""
    if raw not in _zones():
        raise FieldError("not an IANA time zone name (e.g. Europe/Paris)")
    return raw


@dataclass
class ProfileChange:
    """A validated change to one profile: reserved fields and attribute patch."""

    user_id: str
    fields: dict[str, str | None] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)

    def without_contact(self) -> ProfileChange:
        """The same change with the contact fields (email, phone) left out."""
        kept = {k: v for k, v in self.fields.items() if k not in CONTACT_FIELDS}
        return replace(self, fields=kept)


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
    # (field, where the value is, value): an alias first, so the field itself wins; both are
    # checked, so a bad value is never silently dropped.
    raw_fields: list[tuple[str, str, Any]] = [
        (name, f"attributes.{alias}", attributes[alias])
        for alias, name in ATTRIBUTE_ALIASES.items()
        if alias in attributes
    ]
    attributes = {k: v for k, v in attributes.items() if k not in ATTRIBUTE_ALIASES}
    raw_fields += [(name, name, item[name]) for name in RESERVED if name in item]
    clean: dict[str, str | None] = {}
    for name, where, value in raw_fields:
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
    fields_before = {
        name: getattr(user, name)
        for name, value in change.fields.items()
        if getattr(user, name) != value
    }
    for name, value in change.fields.items():
        setattr(user, name, value)
    before = user.attributes or {}
    session = object_session(user)
    if change.attributes:
        # Assign a new dict: JSON columns do not track in-place mutation.
        user.attributes = merge_attributes(user.attributes, change.attributes)
        if session is not None:
            # Rules on attributeChanged get an internal event (only if one listens).
            note_attribute_changes(session, user=user, before=before, now=now)
    if session is not None and (fields_before or user.attributes != before):
        # Journeys triggered by entering a segment, or whose runs watch one, likewise.
        from app.services.journey_runs import note_profile_change

        note_profile_change(
            session, user=user, now=now, attributes_before=before, fields_before=fields_before
        )
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
    ids = list(dict.fromkeys(c.user_id for _, c in changes))
    existing = load_users_by_external_id(session, project.id, ids)
    now = utcnow()
    missing = [i for i in ids if i not in existing]
    # New profiles in one statement per chunk (a concurrent request's insert wins: that
    # profile is then updated here, not created), loaded back in one more.
    created = _insert_profiles(session, project.id, missing, now) if missing else set()
    if missing:
        existing.update(load_users_by_external_id(session, project.id, missing))
    for index, change in changes:
        if change.user_id in created:
            results[index].created = True
            created.discard(change.user_id)  # a second item for the same userId updates it
        apply_change(existing[change.user_id], change, now)
    session.flush()
    return results


def _insert_profiles(
    session: Session, project_id: int, external_ids: Sequence[str], now: datetime
) -> set[str]:
    """Insert empty profiles for these userIds where none exists; the ones inserted."""
    inserted: set[str] = set()
    for start in range(0, len(external_ids), 500):
        rows = [
            {
                "project_id": project_id,
                "external_id": e,
                "attributes": {},
                "created_at": now,
                "updated_at": now,
            }
            for e in external_ids[start : start + 500]
        ]
        stmt = insert_ignore(session, User, ["project_id", "external_id"]).values(rows)
        inserted.update(e for e in session.scalars(stmt.returning(User.external_id)) if e)
    return inserted


def create_user(session: Session, project_id: int, external_id: str, now: datetime) -> User:
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
        _insert_profiles(session, project_id, missing, now)
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
