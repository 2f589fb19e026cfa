"""The Segment tracking spec (identify, track, page, screen, alias, group, batch) on our model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from app.errors import DomainError, InvalidInput, TooLarge
from app.models import Project, User
from app.models.base import utcnow
from app.services.events import (
    RESERVED_MESSAGE_ID_ERROR,
    RESERVED_MESSAGE_ID_PREFIX,
    EventIn,
    Limits,
    TrackResult,
    parse_event,
    track_events,
)
from app.services.identity import (
    IdentityRequired,
    Verification,
    call_user_hash,
    identify,
)
from app.services.profiles import (
    ATTRIBUTE_ALIASES,
    CONTACT_FIELDS,
    MAX_ID_LENGTH,
    apply_change,
    check_id,
    ensure_anonymous_ids,
    parse_profile_change,
)

CALL_TYPES = ("identify", "track", "page", "screen", "alias", "group")
EVENT_CALLS = ("track", "page", "screen")
# Segment's trait names that are our reserved profile fields.
TRAIT_FIELDS = {"email": "email", "phone": "phone"}
# Traits that would set a contact field, directly or through an attribute alias.
CONTACT_TRAITS = frozenset(
    {*TRAIT_FIELDS, *(a for a, name in ATTRIBUTE_ALIASES.items() if name in CONTACT_FIELDS)}
)
# Per-call errors: the call is reported by index, the others still apply.
CALL_ERRORS = (InvalidInput, TooLarge, IdentityRequired)


def verify_call(call: dict[str, Any], verification: Verification) -> bool:
    """Whether a call proves the userId it names (401 where the project requires proof).

    Also checks the fields every call type may carry (422 naming them), whatever its type.
    """
    user_id = check_id(call.get("userId"), "userId")
    check_id(call.get("anonymousId"), "anonymousId")
    errors: dict[str, list[str]] = {}
    message_id = call.get("messageId")
    if message_id not in (None, "") and (
        not isinstance(message_id, str) or len(message_id) > MAX_ID_LENGTH
    ):
        errors["messageId"] = [f"must be a string of at most {MAX_ID_LENGTH} characters"]
    elif isinstance(message_id, str) and message_id.startswith(RESERVED_MESSAGE_ID_PREFIX):
        errors["messageId"] = [RESERVED_MESSAGE_ID_ERROR]
    # A userHash of any other type is no valid hash: it counts as none (identity.py).
    if not isinstance(call.get("context"), dict | None):
        errors["context"] = ["must be an object"]
    if errors:
        raise InvalidInput("Invalid call: " + ", ".join(sorted(errors)), errors)
    return verification.check(user_id, call_user_hash(call))


def _event_from_call(call: dict[str, Any], kind: str, limits: Limits) -> EventIn:
    """A track/page/screen call as one of our events."""
    properties = call.get("properties")
    if properties is None:
        properties = {}
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
    session: Session,
    *,
    project: Project,
    calls: Sequence[Any],
    limits: Limits,
    verification: Verification,
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
            verified = verify_call(call, verification)
            if kind in EVENT_CALLS:
                events.append(_event_from_call(call, kind, limits))
            elif kind == "identify":
                _identify(session, project, call, verified=verified)
            elif kind == "alias":
                _alias(session, project, call, verified=verified)
            # group: accepted and ignored until accounts/groups exist.
        except CALL_ERRORS as err:
            assert isinstance(err, DomainError)
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


def _identify(session: Session, project: Project, call: dict[str, Any], *, verified: bool) -> None:
    user_id = check_id(call.get("userId"), "userId")
    anonymous_id = check_id(call.get("anonymousId"), "anonymousId")
    traits = call.get("traits")
    if traits is None:
        traits = {}
    if not isinstance(traits, dict):
        raise InvalidInput("traits must be an object", {"traits": ["must be an object"]})
    if user_id is None:
        if anonymous_id is None:
            raise InvalidInput("userId or anonymousId required", {"userId": ["required"]})
        # Traits of someone not yet known: kept on the anonymous profile until they identify
        # (a sign-up form may give an email; an unverified merge never carries it over).
        uid = ensure_anonymous_ids(session, project.id, [anonymous_id], utcnow())[anonymous_id]
        user = session.get(User, uid)
        assert user is not None
        apply_change(user, _change_from_traits(project, anonymous_id, traits), utcnow())
        return
    if not verified:
        # Contact fields are left out before validation: they are ignored, not an error.
        traits = {k: v for k, v in traits.items() if k not in CONTACT_TRAITS}
    change = _change_from_traits(project, user_id, traits)
    identify(
        session,
        project=project,
        user_id=user_id,
        anonymous_id=anonymous_id,
        change=change,
        verified=verified,
    )


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


def _alias(session: Session, project: Project, call: dict[str, Any], *, verified: bool) -> None:
    user_id = check_id(call.get("userId"), "userId")
    previous_id = check_id(call.get("previousId"), "previousId")
    if user_id is None or previous_id is None:
        raise InvalidInput(
            "alias needs userId and previousId",
            {"userId" if user_id is None else "previousId": ["required"]},
        )
    identify(session, project=project, user_id=user_id, previous_id=previous_id, verified=verified)
