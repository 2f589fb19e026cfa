"""The Segment tracking spec (identify, track, page, screen, alias, group, batch) on our model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from app.errors import InvalidInput, TooLarge
from app.models import Project, User
from app.models.base import utcnow
from app.services.events import EventIn, Limits, TrackResult, parse_event, track_events
from app.services.users import (
    apply_change,
    ensure_anonymous_ids,
    identify,
    parse_profile_change,
)

CALL_TYPES = ("identify", "track", "page", "screen", "alias", "group")
# Segment's trait names that are our reserved profile fields.
TRAIT_FIELDS = {"email": "email", "phone": "phone"}


def _str_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else None


def _event_from_call(call: dict[str, Any], kind: str, limits: Limits) -> EventIn:
    """A track/page/screen call as one of our events."""
    properties = call.get("properties") or {}
    if kind == "track":
        name = call.get("event")
    else:
        name = f"${kind}"
        if isinstance(properties, dict):
            properties = dict(properties)
            for key in ("name", "category"):
                if call.get(key) is not None:
                    properties.setdefault(key, call[key])
    item: dict[str, Any] = {"name": name, "properties": properties}
    for key in ("userId", "anonymousId", "messageId", "timestamp"):
        if call.get(key) not in (None, ""):
            item[key] = call[key]
    event = parse_event(item, utcnow(), limits, check_size=True)
    event.source = "segment"
    return event


def apply_calls(
    session: Session, *, project: Project, calls: Sequence[Any], limits: Limits
) -> TrackResult:
    """Apply calls in order; events are stored together at the end (their ids resolve the same)."""
    result = TrackResult()
    events: list[EventIn] = []
    for index, call in enumerate(calls):
        try:
            if not isinstance(call, dict):
                raise InvalidInput("expected an object", {"_schema": ["expected an object"]})
            kind = call.get("type")
            if kind not in CALL_TYPES:
                raise InvalidInput("unknown type", {"type": [f"one of {', '.join(CALL_TYPES)}"]})
            if kind in ("track", "page", "screen"):
                events.append(_event_from_call(call, kind, limits))
            elif kind == "identify":
                _identify(session, project, call)
            elif kind == "alias":
                _alias(session, project, call)
            # group: accepted and ignored until accounts/groups exist.
        except (InvalidInput, TooLarge) as err:
            result.errors[index] = err.errors
    stored = track_events(session, project_id=project.id, events=events)
    result.accepted = stored.accepted + sum(
        1
        for i, c in enumerate(calls)
        if i not in result.errors
        and isinstance(c, dict)
        and c.get("type") in ("identify", "alias", "group")
    )
    result.duplicates = stored.duplicates
    return result


def _identify(session: Session, project: Project, call: dict[str, Any]) -> None:
    user_id = _str_id(call.get("userId"))
    anonymous_id = _str_id(call.get("anonymousId"))
    traits = call.get("traits") or {}
    if not isinstance(traits, dict):
        raise InvalidInput("traits must be an object", {"traits": ["must be an object"]})
    if user_id is None:
        if anonymous_id is None:
            raise InvalidInput("userId or anonymousId required", {"userId": ["required"]})
        # Traits of someone not yet known: kept on the anonymous profile until they identify.
        uid = ensure_anonymous_ids(session, project.id, [anonymous_id], utcnow())[anonymous_id]
        user = session.get(User, uid)
        assert user is not None
        apply_change(user, _change_from_traits(project, anonymous_id, traits), utcnow())
        return
    change = _change_from_traits(project, user_id, traits)
    identify(session, project=project, user_id=user_id, anonymous_id=anonymous_id, change=change)


def _change_from_traits(project: Project, user_id: str, traits: dict[str, Any]):
    item: dict[str, Any] = {"userId": user_id}
    attributes = {}
    for key, value in traits.items():
        if key in TRAIT_FIELDS and isinstance(value, str):
            item[TRAIT_FIELDS[key]] = value
        else:
            attributes[key] = value
    item["attributes"] = attributes
    try:
        return parse_profile_change(item, default_region=project.default_region)
    except InvalidInput as err:
        errors = {
            f"traits.{k}" if k in TRAIT_FIELDS.values() else k: v for k, v in err.errors.items()
        }
        raise InvalidInput(err.message, errors) from None


def _alias(session: Session, project: Project, call: dict[str, Any]) -> None:
    user_id = _str_id(call.get("userId"))
    previous_id = _str_id(call.get("previousId"))
    if user_id is None or previous_id is None:
        raise InvalidInput(
            "alias needs userId and previousId",
            {"userId" if user_id is None else "previousId": ["required"]},
        )
    identify(session, project=project, user_id=user_id, previous_id=previous_id)
