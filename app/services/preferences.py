"""A person's preferences: topics, channels and marketing, as the preference page shows them.

`users.preferences` holds the explicit choices (`{"marketing": bool, "channels": {channel:
bool}, "topics": {key: bool}}`; None = every default), which the delivery plan reads
(`journeys.delivery_policy`). Topics are also audiences: topic `news` is the audience named
`topic:news`, so segments and sends can target it like any other. Joining a topic adds the
person to that audience (cause `topic`) and leaving removes them; the JSON mirrors the choice
for the plan. An opt-out topic (`default` true) reaches everyone who has not left it, so its
audience holds only those who chose it explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.errors import NotFound
from app.models import Audience, AudienceMember, Project, User
from app.services import links
from app.services.audiences import add_members, is_current, remove_members
from journeys.delivery_policy import Preferences, subscribed

# The channels a person can turn marketing off on, in the order the page shows them.
CHANNELS: tuple[tuple[str, str], ...] = (
    ("email", "Email"),
    ("sms", "Text messages (SMS)"),
    ("push", "Browser notifications"),
    ("inapp", "In-app messages"),
)
AUDIENCE_PREFIX = "topic:"


@dataclass(frozen=True)
class TopicState:
    """One of the project's topics and whether the person is in it."""

    key: str
    name: str
    description: str | None
    default: bool
    subscribed: bool


@dataclass(frozen=True)
class PageState:
    """Everything the preference page shows."""

    project_name: str
    marketing: bool
    channels: tuple[tuple[str, str, bool], ...]
    topics: tuple[TopicState, ...]


def audience_name(key: str) -> str:
    """The audience a topic maps to."""
    return f"{AUDIENCE_PREFIX}{key}"


def project_topics(project: Project) -> list[dict[str, Any]]:
    """The project's topics (`settings.topics`), well-formed ones only."""
    topics = (project.settings or {}).get("topics") or []
    return [t for t in topics if isinstance(t, dict) and isinstance(t.get("key"), str)]


def resolve_token(session: Session, *, secret: str, token: str) -> tuple[Project, User]:
    """The project and person a preference link is for; NotFound for anything else."""
    try:
        payload = links.verify(secret, "preferences", token)
    except links.BadToken:
        raise NotFound("not a valid preferences link") from None
    project_id = payload.get("p") if isinstance(payload, dict) else None
    user_id = payload.get("u") if isinstance(payload, dict) else None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (project_id, user_id)):
        raise NotFound("not a valid preferences link")
    user = session.get(User, user_id)
    project = session.get(Project, project_id)
    if user is None or project is None or user.project_id != project.id:
        raise NotFound("this person no longer exists")
    return project, user


def _members(session: Session, project: Project, user: User, now: datetime) -> set[str]:
    """The topic keys whose audience the person currently belongs to."""
    names = session.scalars(
        select(Audience.name)
        .join(AudienceMember, AudienceMember.audience_id == Audience.id)
        .where(
            Audience.project_id == project.id,
            Audience.name.startswith(AUDIENCE_PREFIX, autoescape=True),
            AudienceMember.user_id == user.id,
            is_current(now),
        )
    )
    return {name.removeprefix(AUDIENCE_PREFIX) for name in names}


def page_state(session: Session, *, project: Project, user: User, now: datetime) -> PageState:
    """What the page shows: each topic's state as the delivery plan sees it."""
    prefs = Preferences.from_json(user.preferences)
    members = _members(session, project, user, now)
    topics = tuple(
        TopicState(
            key=t["key"],
            name=str(t.get("name") or t["key"]),
            description=t.get("description"),
            default=bool(t.get("default", False)),
            subscribed=subscribed(
                prefs, t["key"], default=bool(t.get("default", False)), member=t["key"] in members
            ),
        )
        for t in project_topics(project)
    )
    return PageState(
        project_name=project.name,
        marketing=prefs.marketing,
        channels=tuple((key, label, prefs.channels.get(key, True)) for key, label in CHANNELS),
        topics=topics,
    )


def _topic_audience(session: Session, project_id: int, key: str) -> int:
    """The id of the topic's audience, created on first use (a concurrent creation wins)."""
    name = audience_name(key)
    session.execute(
        insert_ignore(session, Audience, ["project_id", "name"]).values(
            project_id=project_id,
            name=name,
            description=f"Subscribers of the topic {key!r} (kept by the preference page)",
        )
    )
    audience_id = session.scalar(
        select(Audience.id).where(Audience.project_id == project_id, Audience.name == name)
    )
    assert audience_id is not None
    return audience_id


def set_topics(
    session: Session,
    *,
    project: Project,
    user: User,
    choices: Mapping[str, bool],
    now: datetime,
) -> None:
    """Join or leave topics (the project's keys only): the audience and the JSON together.

    Also what a push topic prompt or an import should call. Flushes, never commits.
    """
    known = {t["key"] for t in project_topics(project)}
    wanted = {k: bool(v) for k, v in choices.items() if k in known}
    if not wanted:
        return
    prefs = Preferences.from_json(user.preferences)
    for key, joined in sorted(wanted.items()):
        audience_id = _topic_audience(session, project.id, key)
        change = add_members if joined else remove_members
        change(
            session,
            project_id=project.id,
            audience_id=audience_id,
            user_pks=[user.id],
            cause="topic",
            now=now,
        )
    user.preferences = Preferences(
        marketing=prefs.marketing,
        channels=prefs.channels,
        topics={**prefs.topics, **wanted},
    ).to_json()
    user.updated_at = now
    session.flush()


def save_preferences(
    session: Session,
    *,
    project: Project,
    user: User,
    marketing: bool,
    channels: Mapping[str, bool],
    topics: Mapping[str, bool],
    now: datetime,
) -> Preferences:
    """Store what the page submitted: unknown channels and topics are ignored."""
    prefs = Preferences.from_json(user.preferences)
    user.preferences = Preferences(
        marketing=marketing,
        channels={
            **prefs.channels,
            **{k: bool(v) for k, v in channels.items() if k in dict(CHANNELS)},
        },
        topics=prefs.topics,
    ).to_json()
    set_topics(session, project=project, user=user, choices=topics, now=now)
    user.updated_at = now
    session.flush()
    return Preferences.from_json(user.preferences)
