"""Web push: not deliverable yet, so nobody is reachable on it (devices come next issue)."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import ColumnElement, FromClause, false, literal

from workers.channels.base import Addressable, Channel, ContentSpec


class Push(Channel):
    """Reaches a profile's push subscriptions; until they exist, unreachable everywhere.

    Unreachable rather than addressed to `user:<id>`: a send must report "unreachable" for
    push the same way for one user and for a segment, never queue messages that can only fail.
    """

    name = "push"
    content: ClassVar[ContentSpec] = ContentSpec(
        fields=("title", "body", "url", "icon", "image"), required=(("title", "body"),)
    )
    default_provider = None
    unreachable_reason = "no push provider configured yet"

    def address_of(self, user: Addressable) -> str | None:
        """No subscriptions yet."""
        return None

    def reachable_sql(self, users: FromClause) -> ColumnElement[bool]:
        """Nobody."""
        return false()

    def address_sql(self, users: FromClause) -> ColumnElement[str]:
        """Never selected (nobody is reachable)."""
        return literal("")


CHANNEL = Push()
