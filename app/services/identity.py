"""Identity: verifying who a call speaks for, and merging profiles (identify, alias, anonymous).

A secret key speaks for every user of its project. A publishable key is public (it is in every
page), so it speaks for a `userId` only with that user's `userHash` = hex HMAC-SHA256(identity
secret, userId), computed by the customer's backend. Without one a call still records events
and custom traits and folds an anonymous visitor into the named user (analytics SDKs keep
working unmodified), but it never sets contact fields, never attaches or moves a push device,
and never folds an identified user into another. With the project setting
`identityVerification: "required"` such calls are refused (401).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.errors import Unauthorized
from app.models import AnonymousId, AudienceChange, AudienceMember, Event, Project, User
from app.models.base import utcnow
from app.models.channels import PushSubscription
from app.models.journey import JourneyRun, JourneyStepLog
from app.models.message import Message
from app.services import user_locks
from app.services.profiles import (
    CONTACT_FIELDS,
    RESERVED,
    ProfileChange,
    apply_change,
    create_user,
    load_users_by_external_id,
)
from app.services.projects import user_hash

SETTING = "identityVerification"
MODES = ("optional", "required")
HASH_HEADER = "X-Cairn-User-Hash"

# Every table whose rows belong to a user and must follow it when profiles merge.
# Later models append (Model, "column") here rather than editing merge_users.
USER_OWNED: list[tuple[Any, str]] = [
    (Event, "user_id"),
    (AnonymousId, "user_id"),
    (Message, "user_id"),
    (AudienceChange, "user_id"),
    # Journey runs follow the visitor into their profile (a clashing live run is ended first).
    (JourneyStepLog, "user_id"),
    (JourneyRun, "user_id"),
]
# Rows unique per user and key (Model, user column, key column): on a merge the target's row
# wins and the source's duplicate is dropped before the rest move.
USER_OWNED_UNIQUE: list[tuple[Any, str, str]] = [(AudienceMember, "user_id", "audience_id")]
# Push devices (the push issue appends its subscriptions table here; its user column must be
# nullable). A device follows a merge only when the call proved the target's identity; otherwise
# it is detached (user NULL) rather than handed to a user the caller may not be.
USER_DEVICES: list[tuple[Any, str]] = [(PushSubscription, "user_id")]


class IdentityRequired(Unauthorized):
    """A publishable-key call needs a valid userHash for what it asks (401)."""


def _hash_matches(secret: str, user_id: str, candidate: Any) -> bool:
    if not isinstance(candidate, str) or len(candidate) != 64:
        return False
    try:
        given = bytes.fromhex(candidate)  # also refuses non-hex and non-ASCII text
    except ValueError:
        return False
    try:
        expected = bytes.fromhex(user_hash(secret, user_id))
    except UnicodeEncodeError:  # a lone surrogate: no hash can match it
        return False
    return hmac.compare_digest(expected, given)


@dataclass(frozen=True)
class Verification:
    """Which userIds a call can vouch for: all (secret key) or those whose userHash it carries."""

    identity_secret: str = field(default="", repr=False)
    required: bool = False
    # The X-Cairn-User-Hash header: valid for the one userId it was computed from.
    header_hash: str | None = None
    trusted: bool = False

    @classmethod
    def for_secret_key(cls) -> Verification:
        """A secret key's (or token's) calls: trusted for every user."""
        return cls(trusted=True)

    def verifies(self, user_id: str, user_hash: Any = None) -> bool:
        """Whether the call proves `user_id` (the given hash or the header's matches it)."""
        if self.trusted:
            return True
        return _hash_matches(self.identity_secret, user_id, user_hash) or _hash_matches(
            self.identity_secret, user_id, self.header_hash
        )

    def check(self, user_id: str | None, user_hash: Any = None) -> bool:
        """Whether a call naming `user_id` is verified; refused where the project requires it."""
        if user_id is None:
            return self.trusted
        if self.verifies(user_id, user_hash):
            return True
        if self.required:
            raise IdentityRequired(
                f"This project requires identity verification: a call naming userId {user_id!r} "
                "needs userHash = hex HMAC-SHA256(identity secret, userId)",
                {"userHash": ["required: a valid hash of userId"]},
            )
        return False


def call_user_hash(call: dict[str, Any]) -> Any:
    """The userHash a call carries: its `userHash` field or Segment's `context.userHash`."""
    if call.get("userHash") is not None:
        return call["userHash"]
    context = call.get("context")
    return context.get("userHash") if isinstance(context, dict) else None


def refused_for_identity(errors: dict[int, dict[str, Any]]) -> bool:
    """True when every error of a request is a missing or invalid userHash (answer 401)."""
    return bool(errors) and all("userHash" in e for e in errors.values())


def may_attach_device(
    verification: Verification, *, user_id: str | None, user_hash: Any = None
) -> bool:
    """Whether a push device may be attached to `user_id` (anonymous devices always may)."""
    return user_id is None or verification.verifies(user_id, user_hash)


def user_column(model: Any, name: str) -> Any:
    """The user column of a USER_OWNED/USER_DEVICES entry (an ORM class or a plain Table)."""
    return model.c[name] if hasattr(model, "c") else getattr(model, name)


def merge_users(session: Session, *, source: User, target: User, verified: bool) -> None:
    """Fold `source` into `target`: its rows move over, target's values win on conflict.

    Unverified, the contact fields stay behind and devices are detached (see the module doc).
    """
    if source.id == target.id:
        return
    if session.get_bind().dialect.name == "postgresql":
        # Both users' processing locks, then both rows (each in id order), before anything
        # moves: an event processor working on either user finishes first, and an event
        # stored for `source` meanwhile waits on the row lock (its foreign key check) instead
        # of landing between the moves and the delete, where deleting `source` would set its
        # user to NULL and lose it from the profile.
        user_locks.lock(session, (source.id, target.id))
        session.execute(
            select(User.id)
            .where(User.id.in_(sorted((source.id, target.id))))
            .order_by(User.id)
            .with_for_update()
        )
    # Segment journeys: the merged profile enters a segment neither profile was in.
    from app.services.journey_runs import note_profile_change, segment_watch

    now = utcnow()
    watch = segment_watch(session, target.project_id)
    befores = [watch.facts(session, u, now) for u in (target, source)] if watch.active else []
    target.attributes = {**(source.attributes or {}), **(target.attributes or {})}
    for name in RESERVED:
        if not verified and name in CONTACT_FIELDS:
            continue
        if getattr(target, name) is None and getattr(source, name) is not None:
            setattr(target, name, getattr(source, name))
    target.created_at = min(target.created_at, source.created_at)
    if source.last_seen_at and (
        not target.last_seen_at or source.last_seen_at > target.last_seen_at
    ):
        target.last_seen_at = source.last_seen_at
    target.updated_at = now
    for model, column, key in USER_OWNED_UNIQUE:
        user_col, key_col = user_column(model, column), user_column(model, key)
        taken = list(session.scalars(select(key_col).where(user_col == target.id)))
        if taken:
            session.execute(
                delete(model).where(user_col == source.id, key_col.in_(taken)),
                execution_options={"synchronize_session": False},
            )
    _end_clashing_runs(session, source.id, target.id)
    moves: list[tuple[Any, str, int | None]] = [(m, c, target.id) for m, c in USER_OWNED]
    moves += [(m, c, target.id) for m, c, _ in USER_OWNED_UNIQUE]
    moves += [(model, column, target.id if verified else None) for model, column in USER_DEVICES]
    for model, column, owner in moves:
        session.execute(
            update(model).where(user_column(model, column) == source.id).values({column: owner}),
            execution_options={"synchronize_session": False},
        )
    session.flush()
    session.delete(source)
    session.flush()
    if watch.active:
        note_profile_change(
            session,
            user=target,
            now=now,
            facts_before=[f for f in befores if f is not None],
        )


def _end_clashing_runs(session: Session, source: int, target: int) -> None:
    """A live journey run of `source` the target already has (same journey and entry key) is
    exited before the runs move: one live run per user, journey and key."""
    from app.models.journey import LIVE_RUN_STATUSES

    theirs = select(JourneyRun.journey_id, JourneyRun.entry_key).where(
        JourneyRun.user_id == target, JourneyRun.status.in_(LIVE_RUN_STATUSES)
    )
    clashing = [
        run_id
        for run_id, journey_id, key in session.execute(
            select(JourneyRun.id, JourneyRun.journey_id, JourneyRun.entry_key).where(
                JourneyRun.user_id == source, JourneyRun.status.in_(LIVE_RUN_STATUSES)
            )
        )
        if (journey_id, key) in set(session.execute(theirs).tuples())
    ]
    if clashing:
        now = utcnow()
        session.execute(
            update(JourneyRun)
            .where(JourneyRun.id.in_(clashing))
            .values(
                status="exited",
                step=None,
                wake_at=None,
                exit_reason="merged into a profile already in this journey",
                ended_at=now,
                updated_at=now,
            ),
            execution_options={"synchronize_session": False},
        )


def identify(
    session: Session,
    *,
    project: Project,
    user_id: str,
    verified: bool,
    anonymous_id: str | None = None,
    previous_id: str | None = None,
    change: ProfileChange | None = None,
) -> User:
    """Make sure `user_id` exists and absorb an anonymous id or a previous id into it.

    `verified` says whether the call proved `user_id` (secret key or valid userHash).
    """
    now = utcnow()
    previous = None
    if previous_id is not None and previous_id != user_id:
        previous = load_users_by_external_id(session, project.id, [previous_id]).get(previous_id)
        if previous is not None and not verified:
            # Checked before anything is written: a refused alias leaves no trace.
            raise IdentityRequired(
                f"Merging the identified user {previous_id!r} into {user_id!r} needs a valid "
                "userHash of userId (or the secret key)",
                {"userHash": ["required to merge an identified user"]},
            )
    user = load_users_by_external_id(session, project.id, [user_id]).get(user_id)
    if user is None:
        user = create_user(session, project.id, user_id, now)
    if previous is not None:
        merge_users(session, source=previous, target=user, verified=True)
    elif previous_id is not None and previous_id != user_id:
        _absorb_anonymous_id(session, project.id, user, previous_id, now, verified=verified)
    if anonymous_id:
        _absorb_anonymous_id(session, project.id, user, anonymous_id, now, verified=verified)
    if change is not None:
        apply_change(user, change if verified else change.without_contact(), now)
    session.flush()
    return user


def _absorb_anonymous_id(
    session: Session,
    project_id: int,
    user: User,
    anonymous_id: str,
    now: datetime,
    *,
    verified: bool,
) -> None:
    mapping = session.scalar(
        select(AnonymousId).where(
            AnonymousId.project_id == project_id, AnonymousId.anonymous_id == anonymous_id
        )
    )
    if mapping is None:
        session.execute(
            insert_ignore(session, AnonymousId, ["project_id", "anonymous_id"]).values(
                project_id=project_id, anonymous_id=anonymous_id, user_id=user.id, created_at=now
            )
        )
        return
    if mapping.user_id == user.id:
        return
    owner = session.get(User, mapping.user_id)
    if owner is not None and owner.external_id is None:
        # An anonymous profile: everything it did becomes the known user's.
        merge_users(session, source=owner, target=user, verified=verified)
    elif verified:
        # The anonymous id was tied to another known user: it moves, their past stays.
        mapping.user_id = user.id
    # Unverified, an identified user's anonymous id stays theirs.
