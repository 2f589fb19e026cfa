"""Web push: one message per active device (push subscription) of a profile.

A message's address is its subscription's id (as text), so deduplication, retries and a
404/410 concern exactly one device: the same send never reaches the same device twice, and
a dead device is deactivated without touching the user's others. A user is reachable on push
when they have an active subscription whose VAPID key is not retired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, FromClause, String, and_, cast, exists, func, select, update

from app.models.channels import PushSubscription, VapidKey
from workers.channels.base import (
    Addressable,
    Channel,
    ContentSpec,
    Deactivate,
    FanoutSource,
    Reached,
    Strike,
)

_subs = PushSubscription.__table__
_keys = VapidKey.__table__


def _live() -> ColumnElement[bool]:
    """A subscription that may be sent to: active, and its VAPID key not retired."""
    return and_(_subs.c.active.is_(True), _keys.c.retired_at.is_(None))


def _with_key() -> FromClause:
    return _subs.join(_keys, _keys.c.id == _subs.c.vapid_key_id)


class Push(Channel):
    """Reaches a profile's browsers through their push subscriptions (RFC 8030/8291/8292)."""

    name = "push"
    content: ClassVar[ContentSpec] = ContentSpec(
        fields=("title", "body", "url", "icon", "image", "actions", "data"),
        required=(("title", "body"),),
        object_fields=frozenset({"actions", "data"}),
    )
    default_provider = "webpush"
    unreachable_reason = "no active push subscription"
    missing_target_reason = "the push subscription was deactivated or removed"
    many_per_user = True

    def address_of(self, user: Addressable) -> str | None:
        """None: devices live in their own table (`addresses_of` reads them)."""
        return None

    def reachable_sql(self, users: FromClause) -> ColumnElement[bool]:
        """The user has a live subscription."""
        return exists(
            select(_subs.c.id)
            .select_from(_with_key())
            .where(_subs.c.user_id == users.c.id, _live())
        )

    def address_sql(self, users: FromClause) -> ColumnElement[str]:
        """The user's oldest live subscription (fan-out uses `fanout_source`: every device)."""
        return (
            select(cast(func.min(_subs.c.id), String))
            .select_from(_with_key())
            .where(_subs.c.user_id == users.c.id, _live())
            .scalar_subquery()
        )

    def fanout_source(self, users: FromClause) -> FanoutSource:
        """One row per live device of each user."""
        joined = users.join(_subs, _subs.c.user_id == users.c.id).join(
            _keys, _keys.c.id == _subs.c.vapid_key_id
        )
        return FanoutSource(joined, _live(), cast(_subs.c.id, String))

    def addresses_of(self, session: Any, users: Sequence[Any]) -> dict[int, list[str]]:
        """Every live device of these users, oldest first."""
        ids = [u.id for u in users]
        out: dict[int, list[str]] = {}
        if not ids:
            return out
        rows = session.execute(
            select(_subs.c.user_id, _subs.c.id)
            .select_from(_with_key())
            .where(_subs.c.user_id.in_(ids), _live())
            .order_by(_subs.c.id)
        )
        for user_id, sub_id in rows:
            out.setdefault(user_id, []).append(str(sub_id))
        return out

    def load_targets(self, session: Any, messages: Sequence[Any]) -> dict[str, Mapping[str, Any]]:
        """Endpoint, subscriber keys and VAPID key pair of each live device addressed."""
        ids = {int(m.address) for m in messages if str(m.address).isdigit()}
        if not ids:
            return {}
        rows = session.execute(
            select(
                _subs.c.id,
                _subs.c.user_id,
                _subs.c.endpoint,
                _subs.c.p256dh,
                _subs.c.auth,
                _subs.c.failures,
                _keys.c.id.label("vapid_key_id"),
                _keys.c.public_key,
                _keys.c.private_key,
            )
            .select_from(_with_key())
            .where(_subs.c.id.in_(ids), _live())
        )
        return {
            str(r.id): {
                "subscription_id": r.id,
                "user_id": r.user_id,
                "endpoint": r.endpoint,
                "p256dh": r.p256dh,
                "auth": r.auth,
                "failures": r.failures,
                "vapid_key_id": r.vapid_key_id,
                "vapid_public_key": r.public_key,
                "vapid_private_key": r.private_key,
            }
            for r in rows
        }

    def apply_effect(self, session: Any, address: str, effect: Any, now: datetime) -> bool:
        """Deactivate a device, count a permanent failure, or start its count again."""
        if not address.isdigit():
            return False
        row = _subs.c.id == int(address)
        if isinstance(effect, Deactivate):
            values: dict[str, Any] = {
                "active": False,
                "deactivated_reason": effect.reason[:1000],
                "deactivated_at": now,
                "updated_at": now,
            }
        elif isinstance(effect, Strike):
            values = {"failures": _subs.c.failures + 1, "updated_at": now}
        elif isinstance(effect, Reached):
            values = {"failures": 0, "last_sent_at": now}
        else:
            return False
        session.execute(update(PushSubscription).where(row).values(values))
        return True


CHANNEL = Push()
