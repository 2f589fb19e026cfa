"""Audiences: named sets of users, their memberships (with optional TTL) and the change log.

A membership is *current* while `left_at` is NULL and `expires_at` is NULL or later than now.
Every query here, `memberCount`, and the segment compiler (`{"audience": ..., "op": "in"}`)
use that same test, so an expired member stops counting the moment its TTL passes, before
`expire_memberships` (the sweeper) marks it left and logs the `ttl` leave.

Every join and leave is one `audience_changes` row with its time and cause (`api`, `rule`,
`topic`, `ttl`, `journey`): the history of an audience and, later, the input of "entered/left
audience" triggers. Re-adding a current member only refreshes its TTL and logs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from app.db import bulk_insert, ids_in, insert_ignore
from app.errors import InvalidInput, TooLarge
from app.models import Audience, AudienceChange, AudienceMember, User
from app.models.audience import CHANGE_CAUSES
from app.services.named import (
    ensure_name_free,
    flush_named,
    get_named,
    list_named_query,
    name_problem,
)
from app.services.rules import note_audience_changes
from app.services.users import ensure_user_ids

MAX_DESCRIPTION_LENGTH = 10_000
MAX_MEMBERS_PER_CALL = 1000
MAX_USER_ID_LENGTH = 255
MAX_TTL_SECONDS = 10 * 366 * 86_400
EXPIRE_BATCH = 5000
_CHUNK = 500
# Ids are BIGINT on PostgreSQL: a longer run of digits cannot be an id.


def is_current(now: datetime) -> ColumnElement[bool]:
    """The membership test every reader shares: not left and not past its TTL."""
    return and_(
        AudienceMember.left_at.is_(None),
        or_(AudienceMember.expires_at.is_(None), AudienceMember.expires_at > now),
    )


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _locked(session: Session, stmt: Select[Any]) -> Select[Any]:
    # SQLite serializes writers (BEGIN IMMEDIATE); PostgreSQL needs the row locks so that a
    # concurrent add, remove or sweep of the same membership waits and then sees our result.
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update()
    return stmt


# --- audiences ----------------------------------------------------------------------------


def _invalid(errors: dict[str, list[str]]) -> InvalidInput:
    shown = "; ".join(f"{path}: {why[0]}" for path, why in errors.items())
    return InvalidInput(f"Invalid audience: {shown}", errors)


def _clean_name(name: Any) -> str:
    clean, why = name_problem(name)
    if why:
        raise _invalid({"name": [why]})
    return clean


def _clean_description(description: Any) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str):
        raise _invalid({"description": ["must be a string or null"]})
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise _invalid({"description": [f"at most {MAX_DESCRIPTION_LENGTH} characters"]})
    if "\x00" in description:
        raise _invalid({"description": ["contains NUL"]})
    return description


def create_audience(
    session: Session, *, project_id: int, name: Any, description: Any = None
) -> Audience:
    """Validate and add an empty audience; Conflict when the name is taken."""
    clean_name = _clean_name(name)
    clean_description = _clean_description(description)
    ensure_name_free(session, Audience, project_id=project_id, name=clean_name, kind="audience")
    audience = Audience(project_id=project_id, name=clean_name, description=clean_description)
    session.add(audience)
    flush_named(session, name=clean_name, kind="audience")
    return audience


def update_audience(
    session: Session, *, project_id: int, ref: str, changes: Mapping[str, Any], replace: bool
) -> Audience:
    """PUT (`replace`: an absent description resets) or PATCH (the given fields)."""
    audience = get_audience(session, project_id=project_id, ref=ref)
    if replace:
        if "name" not in changes:
            raise _invalid({"name": ["required"]})
        changes = {"description": None, **changes}
    name = _clean_name(changes["name"]) if "name" in changes else audience.name
    if "description" in changes:
        audience.description = _clean_description(changes["description"])
    if name != audience.name:
        ensure_name_free(
            session,
            Audience,
            project_id=project_id,
            name=name,
            kind="audience",
            exclude_id=audience.id,
        )
        audience.name = name
    flush_named(session, name=name, kind="audience")
    return audience


def delete_audience(session: Session, *, project_id: int, ref: str) -> None:
    """Remove an audience with its memberships and history (segments naming it match nobody)."""
    session.delete(get_audience(session, project_id=project_id, ref=ref))
    session.flush()


def get_audience(session: Session, *, project_id: int, ref: str) -> Audience:
    """An audience of the project by numeric id or by name, or NotFound."""
    audience: Audience = get_named(
        session, Audience, project_id=project_id, ref=ref, kind="audience"
    )
    return audience


def list_audiences_query(project_id: int, *, after_id: int | None = None) -> Select[Any]:
    """The project's audiences in id order, after the cursor's id."""
    return list_named_query(Audience, project_id, after_id=after_id)


def member_counts(session: Session, audience_ids: Sequence[int], now: datetime) -> dict[int, int]:
    """Current members per audience (0 for an empty one)."""
    counts = dict.fromkeys(audience_ids, 0)
    if audience_ids:
        rows = session.execute(
            select(AudienceMember.audience_id, func.count())
            .where(AudienceMember.audience_id.in_(audience_ids), is_current(now))
            .group_by(AudienceMember.audience_id)
        )
        counts.update({audience_id: count for audience_id, count in rows})
    return counts


# --- memberships --------------------------------------------------------------------------


# Causes whose changes the caller chains itself: `_note_changes` leaves no event for them.
CHAINED_BY_CALLER = frozenset({"rule", "journey"})


def _check_cause(cause: str) -> None:
    if cause not in CHANGE_CAUSES:
        raise ValueError(f"unknown audience change cause {cause!r}")


def _change(member: Any, kind: str, cause: str, at: datetime) -> dict[str, Any]:
    return {
        "project_id": member.project_id,
        "audience_id": member.audience_id,
        "user_id": member.user_id,
        "kind": kind,
        "cause": cause,
        "at": at,
    }


def _log(session: Session, changes: list[dict[str, Any]]) -> None:
    bulk_insert(session, AudienceChange, changes)


def _set(session: Session, ids: list[int], **values: Any) -> None:
    for chunk in _chunks(ids):
        session.execute(
            update(AudienceMember).where(AudienceMember.id.in_(chunk)).values(**values),
            execution_options={"synchronize_session": False},
        )


_MEMBER_COLUMNS = (
    AudienceMember.id,
    AudienceMember.project_id,
    AudienceMember.audience_id,
    AudienceMember.user_id,
    AudienceMember.expires_at,
    AudienceMember.left_at,
)


def add_members(
    session: Session,
    *,
    project_id: int,
    audience_id: int,
    user_pks: Iterable[int],
    cause: str,
    ttl_seconds: int | None = None,
    now: datetime,
) -> dict[int, bool]:
    """Make users (row ids) current members; {user_pk: True if joined, False if refreshed}.

    A current member is refreshed: its expiry becomes `now + ttl_seconds`, or none without a
    TTL (the latest add decides). A former member, or one whose TTL passed, joins again (the
    passed TTL is first logged as a `ttl` leave at its expiry if the sweeper has not yet).
    Each join is logged with `cause`. Flushes, never commits.
    """
    _check_cause(cause)
    expires = now + timedelta(seconds=ttl_seconds) if ttl_seconds else None
    outcome: dict[int, bool] = {}
    changes: list[dict[str, Any]] = []
    refreshed: list[int] = []
    rejoined: list[int] = []
    # Sorted, and locked in that order: two overlapping calls then cannot deadlock.
    pending = sorted(set(user_pks))
    for attempt in range(2):
        for chunk in _chunks(pending):
            stmt = (
                select(*_MEMBER_COLUMNS)
                .where(AudienceMember.audience_id == audience_id, AudienceMember.user_id.in_(chunk))
                .order_by(AudienceMember.user_id)
            )
            for member in session.execute(_locked(session, stmt)):
                if member.left_at is None and (
                    member.expires_at is None or member.expires_at > now
                ):
                    refreshed.append(member.id)
                    outcome[member.user_id] = False
                    continue
                if member.left_at is None:
                    changes.append(_change(member, "left", "ttl", member.expires_at))
                rejoined.append(member.id)
                changes.append(_change(member, "joined", cause, now))
                outcome[member.user_id] = True
        missing = [pk for pk in pending if pk not in outcome]
        if not missing or attempt:
            break
        # ON CONFLICT DO NOTHING: a concurrent add of the same user wins, and the loop's
        # second pass then treats that row as an existing membership.
        for chunk in _chunks(missing):
            rows = [
                {
                    "project_id": project_id,
                    "audience_id": audience_id,
                    "user_id": pk,
                    "joined_at": now,
                    "expires_at": expires,
                    "left_at": None,
                }
                for pk in chunk
            ]
            stmt = insert_ignore(session, AudienceMember, ["audience_id", "user_id"])
            for pk in session.scalars(stmt.values(rows).returning(AudienceMember.user_id)):
                outcome[pk] = True
                changes.append(
                    {
                        "project_id": project_id,
                        "audience_id": audience_id,
                        "user_id": pk,
                        "kind": "joined",
                        "cause": cause,
                        "at": now,
                    }
                )
        pending = [pk for pk in missing if pk not in outcome]
        if not pending:
            break
    _set(session, refreshed, expires_at=expires)
    _set(session, rejoined, joined_at=now, expires_at=expires, left_at=None)
    _log(session, changes)
    session.flush()
    joined = [pk for pk, is_new in outcome.items() if is_new]
    _note_changes(session, project_id, audience_id, joined, True, cause, now)
    return outcome


def remove_members(
    session: Session,
    *,
    project_id: int,
    audience_id: int,
    user_pks: Iterable[int],
    cause: str,
    now: datetime,
) -> set[int]:
    """End the users' current memberships, logging each leave with `cause`; the ones removed.

    A membership whose TTL already passed was not current: it is closed as the sweeper
    would (a `ttl` leave at its expiry) and not counted as removed. Flushes, never commits.
    """
    _check_cause(cause)
    removed: set[int] = set()
    changes: list[dict[str, Any]] = []
    left_now: list[int] = []
    pks = sorted(set(user_pks))
    for chunk in _chunks(pks):
        stmt = (
            select(*_MEMBER_COLUMNS)
            .where(
                AudienceMember.project_id == project_id,
                AudienceMember.audience_id == audience_id,
                AudienceMember.user_id.in_(chunk),
                AudienceMember.left_at.is_(None),
            )
            .order_by(AudienceMember.user_id)
        )
        expired: list[int] = []
        for member in session.execute(_locked(session, stmt)):
            if member.expires_at is not None and member.expires_at <= now:
                expired.append(member.id)
                changes.append(_change(member, "left", "ttl", member.expires_at))
            else:
                left_now.append(member.id)
                removed.add(member.user_id)
                changes.append(_change(member, "left", cause, now))
        _set(session, expired, left_at=AudienceMember.expires_at)
    _set(session, left_now, left_at=now)
    _log(session, changes)
    session.flush()
    _note_changes(session, project_id, audience_id, sorted(removed), False, cause, now)
    return removed


@dataclass
class _Membership:
    """A membership as a MembershipBatch holds it (id None until its insert is written)."""

    project_id: int
    audience_id: int
    user_id: int
    id: int | None
    joined_at: datetime | None
    expires_at: datetime | None
    left_at: datetime | None
    new: bool = False
    ttl_seconds: int | None = None
    # The cause of the batch's latest change (replayed by `flush` for a lost insert).
    cause: str | None = None

    def current(self, now: datetime) -> bool:
        return self.left_at is None and (self.expires_at is None or self.expires_at > now)


class MembershipBatch:
    """Audience adds and removes for one transaction's users, decided in memory, written by
    `flush`: what `add_members` / `remove_members` do for one user, without their three
    statements each (the event processor's rule actions: ~5 ms an event otherwise).

    The caller holds the users' rows locked (the event processor does); the memberships of an
    audience are read, and on PostgreSQL locked, for all the batch's users at its first use.
    Readers of memberships (a rule's `if`, a campaign's target) must see the changes: call
    `flush` before them. No internal events: the processor chains its own changes inline.
    A membership a concurrent writer created between the read and the insert is handed to
    `add_members` at `flush`, which refreshes it.
    """

    def __init__(
        self,
        session: Session,
        user_pks: Iterable[int],
        cause: str,
        related: Callable[[int], Iterable[int]] | None = None,
    ) -> None:
        """`related(project_id)`: the audiences to read together at the first use of one of
        the project's (the ones its rules move users between): one query, not one each."""
        _check_cause(cause)
        self.session = session
        self.cause = cause
        self._users = sorted(set(user_pks))
        self._related = related
        self._state: dict[int, dict[int, _Membership]] = {}
        self._dirty: dict[tuple[int, int], _Membership] = {}
        self._changes: list[dict[str, Any]] = []

    def _members(self, project_id: int, audience_id: int) -> dict[int, _Membership]:
        if audience_id not in self._state:
            wanted = {audience_id} | set(self._related(project_id) if self._related else ())
            wanted -= set(self._state)
            for a in wanted:
                self._state[a] = {}
            session = self.session
            for chunk in _chunks(self._users):
                stmt = (
                    select(*_MEMBER_COLUMNS, AudienceMember.joined_at)
                    .where(
                        ids_in(session, AudienceMember.audience_id, sorted(wanted)),
                        ids_in(session, AudienceMember.user_id, chunk),
                    )
                    .order_by(AudienceMember.audience_id, AudienceMember.user_id)
                )
                for m in session.execute(_locked(session, stmt)):
                    self._state[m.audience_id][m.user_id] = _Membership(
                        m.project_id,
                        m.audience_id,
                        m.user_id,
                        m.id,
                        m.joined_at,
                        m.expires_at,
                        m.left_at,
                    )
        return self._state[audience_id]

    def _cause(self, cause: str | None) -> str:
        if cause is None:
            return self.cause
        _check_cause(cause)
        return cause

    def _log(self, m: _Membership, kind: str, cause: str, at: datetime | None) -> None:
        assert at is not None  # a passed TTL has its expiry; a change its moment
        self._changes.append(_change(m, kind, cause, at))

    def add(
        self,
        *,
        project_id: int,
        audience_id: int,
        user_pk: int,
        ttl_seconds: int | None,
        now: datetime,
        cause: str | None = None,
    ) -> bool:
        """Make the user a current member (refreshing the expiry); True if they joined.
        `cause`: logged instead of the batch's (a journey step the processor runs)."""
        cause = self._cause(cause)
        expires = now + timedelta(seconds=ttl_seconds) if ttl_seconds else None
        members = self._members(project_id, audience_id)
        m = members.get(user_pk)
        joined = True
        if m is None:
            m = members[user_pk] = _Membership(
                project_id, audience_id, user_pk, None, now, expires, None, new=True
            )
        elif m.current(now):
            joined = False
        else:
            if m.left_at is None:  # its TTL passed and the sweeper has not closed it yet
                self._log(m, "left", "ttl", m.expires_at)
            m.joined_at, m.left_at = now, None
        m.expires_at, m.ttl_seconds, m.cause = expires, ttl_seconds, cause
        if joined:
            self._log(m, "joined", cause, now)
        self._dirty[(audience_id, user_pk)] = m
        return joined

    def remove(
        self,
        *,
        project_id: int,
        audience_id: int,
        user_pk: int,
        now: datetime,
        cause: str | None = None,
    ) -> bool:
        """End the user's current membership; True if they were a current member.
        `cause`: logged instead of the batch's."""
        cause = self._cause(cause)
        m = self._members(project_id, audience_id).get(user_pk)
        if m is None or m.left_at is not None:
            return False
        removed = m.current(now)
        m.cause = cause
        if removed:
            m.left_at = now
            self._log(m, "left", cause, now)
        else:  # its TTL passed: closed as the sweeper would, at its expiry
            m.left_at = m.expires_at
            self._log(m, "left", "ttl", m.expires_at)
        self._dirty[(audience_id, user_pk)] = m
        return removed

    def flush(self) -> None:
        """Write the changed memberships and the change log."""
        dirty, self._dirty = list(self._dirty.values()), {}
        changes, self._changes = self._changes, []
        session = self.session
        new = [m for m in dirty if m.new]
        inserted = {id(m) for m in new}
        lost: list[_Membership] = []
        if new:
            rows = [
                {
                    "project_id": m.project_id,
                    "audience_id": m.audience_id,
                    "user_id": m.user_id,
                    "joined_at": m.joined_at,
                    "expires_at": m.expires_at,
                    "left_at": m.left_at,
                }
                for m in new
            ]
            made = bulk_insert(
                session,
                AudienceMember,
                rows,
                conflict=["audience_id", "user_id"],
                returning=("id", "audience_id", "user_id"),
            )
            ids = {(a, u): i for i, a, u in made}
            for m in new:
                m.id, m.new = ids.get((m.audience_id, m.user_id)), False
                if m.id is None:
                    lost.append(m)
        table: Table = AudienceMember.__table__  # type: ignore[assignment]
        updates = [
            {"b_id": m.id, "b_joined": m.joined_at, "b_expires": m.expires_at, "b_left": m.left_at}
            for m in dirty
            if m.id is not None and id(m) not in inserted
        ]
        if updates:
            session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(
                    joined_at=bindparam("b_joined"),
                    expires_at=bindparam("b_expires"),
                    left_at=bindparam("b_left"),
                ),
                updates,
            )
        if lost:
            keys = {(m.audience_id, m.user_id) for m in lost}
            changes = [c for c in changes if (c["audience_id"], c["user_id"]) not in keys]
            for m in lost:
                self._state[m.audience_id].pop(m.user_id, None)
        _log(session, changes)
        for m in lost:  # a concurrent writer's row: apply the change the careful way
            assert m.joined_at is not None
            if m.left_at is None:
                add_members(
                    session,
                    project_id=m.project_id,
                    audience_id=m.audience_id,
                    user_pks=[m.user_id],
                    cause=m.cause or self.cause,
                    ttl_seconds=m.ttl_seconds,
                    now=m.joined_at,
                )
            else:
                remove_members(
                    session,
                    project_id=m.project_id,
                    audience_id=m.audience_id,
                    user_pks=[m.user_id],
                    cause=m.cause or self.cause,
                    now=m.left_at,
                )


def expire_memberships(session: Session, now: datetime, *, limit: int = EXPIRE_BATCH) -> int:
    """Mark up to `limit` memberships past their TTL as left at their expiry; how many.

    Each gets a `ttl` leave in the change log. For the sweeper: call it until it returns less
    than `limit`. On PostgreSQL rows locked by a concurrent add or remove are skipped (that
    call closes or renews them itself). Flushes, never commits.
    """
    stmt = (
        select(*_MEMBER_COLUMNS)
        .where(
            AudienceMember.left_at.is_(None),
            AudienceMember.expires_at.is_not(None),
            AudienceMember.expires_at <= now,
        )
        .order_by(AudienceMember.expires_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    members = list(session.execute(stmt))
    if not members:
        return 0
    _set(session, [m.id for m in members], left_at=AudienceMember.expires_at)
    _log(session, [_change(m, "left", "ttl", m.expires_at) for m in members])
    session.flush()
    left: dict[tuple[int, int], list[int]] = {}
    for m in members:
        left.setdefault((m.project_id, m.audience_id), []).append(m.user_id)
    for (project_id, audience_id), pks in sorted(left.items()):
        _note_changes(session, project_id, audience_id, pks, False, "ttl", now)
    return len(members)


def _note_changes(
    session: Session,
    project_id: int,
    audience_id: int,
    user_pks: list[int],
    entered: bool,
    cause: str,
    now: datetime,
) -> None:
    # Rules listening for this audience get an internal event in the user's event order; a
    # change made by a rule is chained inline by the event processor instead, and a journey's
    # step leaves its own, one chain level deeper (journey_runs._Engine._caused).
    if not user_pks or cause in CHAINED_BY_CALLER:
        return
    note_audience_changes(
        session,
        project_id=project_id,
        audience_id=audience_id,
        user_pks=user_pks,
        entered=entered,
        cause=cause,
        now=now,
    )


# --- reading memberships ------------------------------------------------------------------


def members_query(
    *, audience_id: int, now: datetime, after_user_pk: int | None = None
) -> Select[Any]:
    """Current members (user row id, userId, joinedAt, expiresAt) in user row id order."""
    stmt = (
        select(
            AudienceMember.user_id.label("id"),
            User.external_id.label("user_id"),
            AudienceMember.joined_at,
            AudienceMember.expires_at,
        )
        .join(User, User.id == AudienceMember.user_id)
        .where(AudienceMember.audience_id == audience_id, is_current(now))
        .order_by(AudienceMember.user_id)
    )
    if after_user_pk is not None:
        stmt = stmt.where(AudienceMember.user_id > after_user_pk)
    return stmt


def audiences_of(session: Session, user_pk: int, now: datetime) -> list[dict[str, Any]]:
    """The user's current audiences: [{id, name, joined_at, expires_at}] in audience id order.

    Dump with `app.schemas.audiences.MembershipSchema` for the API's camelCase keys.
    """
    rows = session.execute(
        select(Audience.id, Audience.name, AudienceMember.joined_at, AudienceMember.expires_at)
        .join(AudienceMember, AudienceMember.audience_id == Audience.id)
        .where(AudienceMember.user_id == user_pk, is_current(now))
        .order_by(Audience.id)
    )
    return [dict(row._mapping) for row in rows]


# --- the API's members calls --------------------------------------------------------------


@dataclass
class MemberResult:
    """The outcome for one userId of a members call, in request order."""

    user_id: str
    created: bool = False
    joined: bool = False
    removed: bool = False
    expires_at: datetime | None = None


def _clean_user_ids(user_ids: Any) -> list[str]:
    if not isinstance(user_ids, list) or not user_ids:
        raise InvalidInput("userIds must be a non-empty list", {"userIds": ["required"]})
    if len(user_ids) > MAX_MEMBERS_PER_CALL:
        raise TooLarge(
            f"at most {MAX_MEMBERS_PER_CALL} userIds per call",
            {"userIds": [f"at most {MAX_MEMBERS_PER_CALL} items"]},
        )
    errors: dict[str, list[str]] = {}
    for index, value in enumerate(user_ids):
        if not isinstance(value, str) or not 0 < len(value) <= MAX_USER_ID_LENGTH:
            errors[f"userIds[{index}]"] = [f"a string of 1-{MAX_USER_ID_LENGTH} characters"]
        elif "\x00" in value:
            errors[f"userIds[{index}]"] = ["contains NUL"]
    if errors:
        raise InvalidInput("Invalid userIds: " + ", ".join(errors), errors)
    return list(dict.fromkeys(user_ids))


def _user_pks(session: Session, project_id: int, user_ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(user_ids):
        rows = session.execute(
            select(User.external_id, User.id).where(
                User.project_id == project_id, User.external_id.in_(chunk)
            )
        )
        found.update({e: i for e, i in rows if e is not None})
    return found


def add_members_by_user_id(
    session: Session,
    *,
    project_id: int,
    audience: Audience,
    user_ids: Any,
    ttl_seconds: int | None,
    now: datetime,
) -> list[MemberResult]:
    """The API's add: unknown userIds are created on first sight (`created`), like events."""
    ids = _clean_user_ids(user_ids)
    if ttl_seconds is not None and not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidInput(
            "ttlSeconds out of range", {"ttlSeconds": [f"1-{MAX_TTL_SECONDS} seconds"]}
        )
    known = _user_pks(session, project_id, ids)
    pks = {**known, **ensure_user_ids(session, project_id, [i for i in ids if i not in known], now)}
    joined = add_members(
        session,
        project_id=project_id,
        audience_id=audience.id,
        user_pks=[pks[i] for i in ids],
        cause="api",
        ttl_seconds=ttl_seconds,
        now=now,
    )
    expires = now + timedelta(seconds=ttl_seconds) if ttl_seconds else None
    return [
        MemberResult(i, created=i not in known, joined=joined[pks[i]], expires_at=expires)
        for i in ids
    ]


def remove_members_by_user_id(
    session: Session, *, project_id: int, audience: Audience, user_ids: Any, now: datetime
) -> list[MemberResult]:
    """The API's remove: unknown userIds and non-members are reported `removed: false`."""
    ids = _clean_user_ids(user_ids)
    pks = _user_pks(session, project_id, ids)
    removed = remove_members(
        session,
        project_id=project_id,
        audience_id=audience.id,
        user_pks=list(pks.values()),
        cause="api",
        now=now,
    )
    return [MemberResult(i, removed=pks.get(i) in removed) for i in ids]
