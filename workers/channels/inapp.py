"""In-app: the message row is the inbox item; every identified profile has an inbox."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import ColumnElement, FromClause

from workers.channels.base import Addressable, Channel, ContentSpec, user_address_sql


class InApp(Channel):
    """Reaches a profile with a userId (`user:<id>`), through the inbox and live streams."""

    name = "inapp"
    content: ClassVar[ContentSpec] = ContentSpec(
        fields=("title", "body", "url", "data"),
        required=(("title", "body"),),
        object_fields=frozenset({"data"}),
    )
    default_provider = "inapp"
    unreachable_reason = "no userId on the profile"

    def address_of(self, user: Addressable) -> str | None:
        """`user:<id>` for a known userId; anonymous profiles have no inbox."""
        return f"user:{user.id}" if user.external_id else None

    def reachable_sql(self, users: FromClause) -> ColumnElement[bool]:
        """A non-empty userId."""
        return users.c.external_id.is_not(None) & (users.c.external_id != "")

    def address_sql(self, users: FromClause) -> ColumnElement[str]:
        """`user:<id>`."""
        return user_address_sql(users)


CHANNEL = InApp()
