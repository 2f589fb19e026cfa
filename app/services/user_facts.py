"""What the Python filter evaluator needs to know about one user, loaded from the database.

The segment language has two evaluators (SQL for whole audiences, `journeys.filters.evaluate`
for one user at trigger time); this is the loader for the second. It reads only what the
condition looks at: the event names it counts, and reachability only when it tests a channel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Audience, AudienceMember, Event, User
from app.services.audiences import is_current
from journeys.filters import (
    ChannelCondition,
    Condition,
    EventFact,
    UserFacts,
    evaluate,
    parse_filter,
    required_event_names,
    walk,
)

# A user's history per event name read for one evaluation: counting beyond this is rare and
# would make one trigger cost a scan (the SQL evaluator has no such bound).
MAX_EVENTS_PER_NAME = 10_000


def load_facts(
    session: Session,
    user: User,
    now: datetime,
    cond: Condition | None = None,
    *,
    events_before: int | None = None,
) -> UserFacts:
    """The facts `evaluate(cond, facts)` reads for this user (everything if `cond` is None);
    with `events_before`, only the events stored before that event id (the user as they were
    before that event and the later ones)."""
    names = required_event_names(cond) if cond is not None else set()
    events: list[EventFact] = []
    if names:
        for name in sorted(names):
            stmt = select(Event.name, Event.timestamp, Event.properties).where(
                Event.project_id == user.project_id,
                Event.user_id == user.id,
                Event.name == name,
                Event.erased.is_(False),
            )
            if events_before is not None:
                stmt = stmt.where(Event.id < events_before)
            rows = session.execute(stmt.order_by(Event.timestamp.desc()).limit(MAX_EVENTS_PER_NAME))
            events += [
                EventFact(name=r.name, timestamp=r.timestamp, properties=r.properties or {})
                for r in rows
            ]
    memberships = session.execute(
        select(Audience.id, Audience.name)
        .join(AudienceMember, AudienceMember.audience_id == Audience.id)
        .where(AudienceMember.user_id == user.id, is_current(now))
    )
    audiences: set[str] = set()
    for audience_id, name in memberships:
        audiences |= {str(audience_id), name}
    reachable: frozenset[str] = frozenset()
    if cond is None or any(isinstance(node, ChannelCondition) for node in walk(cond)):
        from workers.channels import CHANNELS

        reachable = frozenset(
            name for name, channel in CHANNELS.items() if channel.addresses_of(session, [user])
        )
    return profile_facts(
        user, now, audiences=frozenset(audiences), reachable=reachable, events=tuple(events)
    )


def profile_facts(user: User, now: datetime, **loaded: Any) -> UserFacts:
    """The facts the user row itself holds (plus what the caller `loaded`: audiences,
    reachable, events), for a filter that reads nothing else."""
    return UserFacts(
        now=now,
        user_id=user.external_id,
        email=user.email,
        phone=user.phone,
        language=user.language,
        timezone=user.timezone,
        created_at=user.created_at,
        last_seen_at=user.last_seen_at,
        attributes=user.attributes or {},
        **loaded,
    )


def user_matches(session: Session, user: User, tree: dict | None, now: datetime) -> bool:
    """Whether the user matches a normalized filter tree now (None or `{"all": []}`: yes)."""
    if not tree or tree == {"all": []}:
        return True
    cond = parse_filter(tree)
    return evaluate(cond, load_facts(session, user, now, cond))
