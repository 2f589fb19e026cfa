"""Per-user processing locks: PostgreSQL transaction-scoped advisory locks, one per user.

The event processor holds a user's lock while it works on the user's events (so the events of
one user are processed by one transaction at a time, in id order), and an identity merge takes
the locks of both users before it moves anything (so it waits for a processor working on
either). They are not the user's row lock: ingestion locks the row to keep each user's events
committed in id order, and a processor holding the row for its whole transaction made every
new event of that user wait for the processing of the previous ones (bench/trigger.py: a POST
to a busy user took seconds). A processor that changes the row (`setAttributes`) still locks
it, at that moment. SQLite serializes writers: there these are no-ops.

Keys are (NAMESPACE, user id modulo 2^31-1) in the two-int4 key space, which does not overlap
the single-bigint keys (the scheduler's lock): two users sharing a key only wait for each other.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

NAMESPACE = 0x43414952  # "CAIR"
_KEY = "CAST(u.id % 2147483647 AS integer)"


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def try_lock(session: Session, user_ids: Iterable[int]) -> set[int]:
    """Take the locks that are free now (never waits); the users locked."""
    ids = sorted(set(user_ids))
    if not ids or not _postgres(session):
        return set(ids)
    rows = session.execute(
        text(
            f"SELECT u.id FROM unnest(CAST(:ids AS bigint[])) AS u(id)"
            f" WHERE pg_try_advisory_xact_lock(:ns, {_KEY}) ORDER BY u.id"
        ),
        {"ids": ids, "ns": NAMESPACE},
    )
    return {r[0] for r in rows}


def lock(session: Session, user_ids: Iterable[int]) -> None:
    """Wait for the locks, taken in id order (two lockers of the same users cannot deadlock)."""
    ids = sorted(set(user_ids))
    if not ids or not _postgres(session):
        return
    for user_id in ids:
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, CAST(:id % 2147483647 AS integer))"),
            {"ns": NAMESPACE, "id": user_id},
        )
