"""Browser push subscriptions (devices): subscribe, unsubscribe, list.

The same endpoint is one subscription: subscribing again updates its keys, topics and owner
and reactivates it. Each one records the VAPID key it was made with and is always signed with
it, so rotating the project's key never leaves devices that fail forever.

Who a device belongs to follows identity verification (API.md): a secret key attaches it to
any user; a publishable key attaches it to `userId` only with that user's valid `userHash`.
Without one, a call that also gives `anonymousId` attaches the device to that visitor's
anonymous profile (it follows them into `userId` on a later verified identify or alias); one
that gives only `userId` is refused with 401 naming `userHash`. An anonymous id that already
belongs to an identified user counts as that user: it needs the hash too.

The endpoint must be https on a public address (after DNS resolution) unless
ALLOW_PRIVATE_ENDPOINTS=1; the provider checks it again at send time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import insert_ignore
from app.errors import InvalidInput, NotFound
from app.models import Project, User
from app.models.base import utcnow
from app.models.channels import PushSubscription, VapidKey
from app.services.identity import IdentityRequired, Verification
from app.services.profiles import (
    FieldError,
    create_user,
    ensure_anonymous_ids,
    load_users_by_external_id,
    normalize_language,
    normalize_timezone,
)
from app.services.vapid import current_key, key_by_public

MAX_TOPICS = 50


@dataclass(frozen=True)
class SubscriptionRequest:
    """A checked POST /v1/push/subscriptions body (`app.schemas.push`)."""

    endpoint: str
    p256dh: str
    auth: str
    topics: list[str] = field(default_factory=list)
    user_id: str | None = None
    anonymous_id: str | None = None
    user_hash: str | None = None
    timezone: str | None = None
    language: str | None = None
    application_server_key: str | None = None
    user_agent: str | None = None


def check_endpoint(endpoint: str, *, allow_private: bool) -> None:
    """422 naming `subscription.endpoint` unless it is https on a public address."""
    from workers.channels.providers.webpush import endpoint_problem

    problem = endpoint_problem(endpoint, allow_private=allow_private)
    if problem is not None:
        raise InvalidInput(f"subscription.endpoint {problem}", {"subscription.endpoint": [problem]})


def _owner(
    session: Session, project: Project, req: SubscriptionRequest, verification: Verification
) -> User:
    """The profile the device goes to, by the identity rule in the module doc."""
    now = utcnow()
    if req.user_id is not None:
        if verification.check(req.user_id, req.user_hash):
            found = load_users_by_external_id(session, project.id, [req.user_id])
            return found.get(req.user_id) or create_user(session, project.id, req.user_id, now)
        if req.anonymous_id is None:
            raise IdentityRequired(
                f"Attaching a push device to userId {req.user_id!r} with a publishable key "
                "needs userHash = hex HMAC-SHA256(identity secret, userId); or send "
                "anonymousId to attach it to the visitor until they are identified",
                {"userHash": ["required to attach a device to userId"]},
            )
    if req.anonymous_id is None:
        raise InvalidInput(
            "userId or anonymousId is required", {"userId": ["userId or anonymousId is required"]}
        )
    owner_id = ensure_anonymous_ids(session, project.id, [req.anonymous_id], now)[req.anonymous_id]
    owner = session.get(User, owner_id)
    assert owner is not None
    if owner.external_id is not None and not verification.verifies(
        owner.external_id, req.user_hash
    ):
        raise IdentityRequired(
            f"anonymousId {req.anonymous_id!r} belongs to an identified user: subscribe with "
            "their userId and userHash",
            {"userHash": ["required: this anonymousId belongs to an identified user"]},
        )
    return owner


def _key(session: Session, project_id: int, req: SubscriptionRequest) -> VapidKey | None:
    """The key named by the request (None: not given)."""
    if req.application_server_key is None:
        return None
    key = key_by_public(session, project_id=project_id, public_key=req.application_server_key)
    if key is None:  # a reference to nothing, like an unknown segment: 404
        raise NotFound(
            "applicationServerKey is not one of this project's VAPID keys",
            {"applicationServerKey": ["not a current VAPID key of this project"]},
        )
    return key


def _browser_fields(req: SubscriptionRequest) -> dict[str, str | None]:
    errors: dict[str, list[str]] = {}
    out: dict[str, str | None] = {"timezone": None, "language": None}
    for name, normalize in (("timezone", normalize_timezone), ("language", normalize_language)):
        raw = getattr(req, name)
        if raw:
            try:
                out[name] = normalize(raw)
            except FieldError as err:
                errors[name] = [str(err)]
    if errors:
        raise InvalidInput("Invalid " + ", ".join(sorted(errors)), errors)
    return out


def subscribe(
    session: Session,
    *,
    project: Project,
    request: SubscriptionRequest,
    verification: Verification,
    allow_private: bool,
) -> tuple[PushSubscription, bool]:
    """Store (or update) the device; returns it and whether it is new."""
    check_endpoint(request.endpoint, allow_private=allow_private)
    browser = _browser_fields(request)
    owner = _owner(session, project, request, verification)
    named = _key(session, project.id, request)
    now = utcnow()
    existing = _by_endpoint(session, project.id, request.endpoint)
    created = existing is None
    if existing is None:
        key = named or current_key(session, project_id=project.id)
        session.execute(
            insert_ignore(session, PushSubscription, ["project_id", "endpoint"]).values(
                project_id=project.id,
                user_id=owner.id,
                vapid_key_id=key.id,
                endpoint=request.endpoint,
                p256dh=request.p256dh,
                auth=request.auth,
                topics=request.topics,
                active=True,
                failures=0,
                created_at=now,
                updated_at=now,
            )
        )
        existing = _by_endpoint(session, project.id, request.endpoint)
        assert existing is not None
    elif named is not None:
        key = named
    else:
        # The browser keeps the key it subscribed with: so does the row (unless it is gone).
        kept = session.get(VapidKey, existing.vapid_key_id)
        key = (
            kept
            if kept is not None and kept.retired_at is None
            else current_key(session, project_id=project.id)
        )
    existing.user_id = owner.id
    existing.vapid_key_id = key.id
    existing.p256dh = request.p256dh
    existing.auth = request.auth
    existing.topics = request.topics
    existing.user_agent = (request.user_agent or "")[:512] or existing.user_agent
    existing.timezone = browser["timezone"] or existing.timezone
    existing.language = browser["language"] or existing.language
    existing.active = True
    existing.failures = 0
    existing.deactivated_reason = None
    existing.deactivated_at = None
    existing.updated_at = now
    if request.topics:
        # The prompt's ticked topics join them on every channel (audiences `topic:<key>`);
        # the project's unknown keys are ignored, and leaving is the preference page's.
        from app.services.preferences import set_topics

        set_topics(
            session,
            project=project,
            user=owner,
            choices=dict.fromkeys(request.topics, True),
            now=now,
        )
    # The browser's zone and language fill what the profile lacks (quiet hours, templates).
    owner.timezone = owner.timezone or browser["timezone"]
    owner.language = owner.language or browser["language"]
    session.flush()
    return existing, created


def _by_endpoint(session: Session, project_id: int, endpoint: str) -> PushSubscription | None:
    return session.scalar(
        select(PushSubscription).where(
            PushSubscription.project_id == project_id, PushSubscription.endpoint == endpoint
        )
    )


def unsubscribe(session: Session, *, project_id: int, endpoint: str) -> int:
    """Deactivate the device with this endpoint (knowing it proves the browser); 0 or 1.

    The row stays, inactive, so subscribing the same endpoint again is the same device.
    """
    now = utcnow()
    result = session.execute(
        update(PushSubscription)
        .where(
            PushSubscription.project_id == project_id,
            PushSubscription.endpoint == endpoint,
            PushSubscription.active.is_(True),
        )
        .values(
            active=False,
            deactivated_reason="unsubscribed",
            deactivated_at=now,
            updated_at=now,
        ),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def describe(session: Session, sub: PushSubscription, *, created: bool) -> dict[str, Any]:
    """The API shape of a stored device."""
    owner = session.get(User, sub.user_id) if sub.user_id is not None else None
    key = session.get(VapidKey, sub.vapid_key_id)
    return {
        "id": sub.id,
        "userId": owner.external_id if owner is not None else None,
        "anonymous": owner is None or owner.external_id is None,
        "topics": list(sub.topics or []),
        "active": sub.active,
        "created": created,
        "applicationServerKey": key.public_key if key is not None else "",
    }


def user_subscriptions(session: Session, *, user_pk: int) -> list[dict[str, Any]]:
    """A profile's devices for GET /v1/users/{userId}, newest first (no keys or endpoint
    secrets beyond the push service's host)."""
    from urllib.parse import urlsplit

    rows = session.scalars(
        select(PushSubscription)
        .where(PushSubscription.user_id == user_pk)
        .order_by(PushSubscription.id.desc())
        .limit(100)
    )
    return [
        {
            "id": s.id,
            "pushService": urlsplit(s.endpoint).hostname,
            "topics": list(s.topics or []),
            "active": s.active,
            "deactivatedReason": s.deactivated_reason,
            "failures": s.failures,
            "timezone": s.timezone,
            "language": s.language,
            "userAgent": s.user_agent,
            "createdAt": s.created_at.isoformat(),
        }
        for s in rows
    ]
