"""What every channel and every provider is: the shapes the registries hold.

A `Channel` knows everything about one way of reaching a person (its content fields, how a
user's address is found in Python and in SQL, reachability, address normalisation, how direct
content maps onto its fields, its default provider). A provider turns one rendered message into
a `SendResult`; what it wants done to our data (suppress this address, keep a copy, publish to
live streams) it reports as effects, which the delivery's record step applies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import ColumnElement, FromClause, String, cast, literal


@dataclass(frozen=True)
class ContentSpec:
    """What a channel's content holds: its fields, which are required, caps and escaping."""

    fields: tuple[str, ...]
    # Each group needs at least one non-blank field: (("subject",), ("html", "text")).
    required: tuple[tuple[str, ...], ...]
    html_fields: frozenset[str] = frozenset()
    # Fields holding a JSON object whose string values (at any depth) are templates.
    object_fields: frozenset[str] = frozenset()
    max_chars: Mapping[str, int] = field(default_factory=dict)
    # Fields that must stay on one line (a header): newlines become spaces.
    single_line: frozenset[str] = frozenset()


class Addressable(Protocol):
    """The profile columns a channel reads to find a user's address (a `User` row)."""

    id: int
    external_id: str | None
    email: str | None
    phone: str | None


@dataclass(frozen=True)
class FanoutSource:
    """What fan-out selects a channel's messages from: one row per address.

    `from_` is the users table or a join of it (push: users x active subscriptions), `where`
    who is reachable there, `address` the message's address for each row.
    """

    from_: FromClause
    where: ColumnElement[bool]
    address: ColumnElement[str]


class Channel(ABC):
    """One channel; subclasses override what differs. Instances are registered by name."""

    name: ClassVar[str]
    content: ClassVar[ContentSpec]
    # The provider used when neither the environment nor the project names one.
    default_provider: ClassVar[str | None] = None
    # (setting, provider): a provider's credentials being set selects it over the default
    # (`SMTP_URL` → `smtp`), unless `<CHANNEL>_PROVIDER` names another. First match wins.
    credential_providers: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Why a user without an address on this channel gets no message (API `<channel>Error`).
    unreachable_reason: ClassVar[str] = "unreachable"

    @abstractmethod
    def address_of(self, user: Addressable) -> str | None:
        """The user's address on this channel, or None if unreachable there."""

    @abstractmethod
    def reachable_sql(self, users: FromClause) -> ColumnElement[bool]:
        """Over the `users` table: true exactly for users `address_of` gives an address."""

    @abstractmethod
    def address_sql(self, users: FromClause) -> ColumnElement[str]:
        """Over the `users` table: the address `address_of` gives (for INSERT ... SELECT)."""

    def load_targets(self, session: Any, messages: Sequence[Any]) -> dict[str, Mapping[str, Any]]:
        """What a provider needs beyond the address, by address (a push subscription's
        endpoint and keys), read in the delivery's load transaction. Default: nothing.

        A channel that needs a target and finds none for a message fails it with
        `missing_target_reason` (a push subscription deleted or deactivated since).
        """
        return {}

    # Set by channels whose messages cannot be sent without a loaded target.
    missing_target_reason: ClassVar[str | None] = None
    # A user may have several addresses here (push: one per device): one send then makes a
    # message per address, but counts once against the frequency cap.
    many_per_user: ClassVar[bool] = False

    def fanout_source(self, users: FromClause) -> FanoutSource:
        """The rows fan-out inserts messages from. Default: one per reachable user."""
        return FanoutSource(users, self.reachable_sql(users), self.address_sql(users))

    def addresses_of(self, session: Any, users: Sequence[Any]) -> dict[int, list[str]]:
        """Per user id, every address this channel reaches them at (direct sends).

        Default: `address_of`, one address or none; push reads the devices in `session`.
        """
        out: dict[int, list[str]] = {}
        for user in users:
            address = self.address_of(user)
            if address is not None:
                out[user.id] = [address]
        return out

    def apply_effect(self, session: Any, address: str, effect: Any, now: datetime) -> bool:
        """Apply a provider's effect on an address row this channel keeps (push: mark a
        subscription inactive, count its failures), in the record transaction.

        False: the channel keeps no such rows (a dead email address is suppressed instead).
        """
        return False

    def normalize_address(self, raw: str, region: str | None) -> str:
        """A raw address (a suppression, a raw send) in its stored form; raises ValueError."""
        return raw

    def direct_fields(self, content: Mapping[str, Any]) -> dict[str, Any]:
        """Map `{title, body, url, data}` of a direct send onto this channel's fields."""
        out: dict[str, Any] = {
            "title": content.get("title") or "",
            "body": content.get("body") or "",
        }
        if content.get("url"):
            out["url"] = content["url"]
        if content.get("data"):
            out["data"] = content["data"]
        return out


class ColumnChannel(Channel):
    """A channel whose address is a non-empty profile column (email, phone)."""

    column: ClassVar[str]

    def address_of(self, user: Addressable) -> str | None:
        """The column's value; empty counts as none."""
        value: str | None = getattr(user, self.column)
        return value or None

    def reachable_sql(self, users: FromClause) -> ColumnElement[bool]:
        """The column is neither NULL nor empty."""
        col = users.c[self.column]
        return col.is_not(None) & (col != "")

    def address_sql(self, users: FromClause) -> ColumnElement[str]:
        """The column itself."""
        expr: ColumnElement[str] = users.c[self.column]
        return expr


def user_address_sql(users: FromClause) -> ColumnElement[str]:
    """`user:<id>`: the address of channels that reach a profile, not a mailbox or number."""
    return literal("user:").concat(cast(users.c.id, String))


# --- what providers get and give back ----------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What a provider needs to send one message."""

    message_id: int
    project_id: int
    user_id: int | None
    channel: str
    address: str
    content: dict[str, Any]
    increment_id: str | None = None
    increment_count: int = 1
    replaces_id: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    # What the channel's `load_targets` found for the address (push: endpoint, keys, VAPID).
    target: Mapping[str, Any] = field(default_factory=dict)
    transactional: bool = False
    # When the message stops being worth sending (push TTL = what remains of it).
    expires_at: datetime | None = None
    # Push Urgency (RFC 8030): very-low, low, normal, high; None = normal.
    urgency: str | None = None
    topic: str | None = None
    # The send the message belongs to (push: the notification tag shared by a user's devices).
    send_id: int | None = None


@dataclass(frozen=True)
class Suppress:
    """Effect: never send to this address on this channel again (hard bounce, complaint)."""

    reason: str


@dataclass(frozen=True)
class Deactivate:
    """Effect: this address is gone (a push subscription answered 404/410)."""

    reason: str


@dataclass(frozen=True)
class Strike:
    """Effect: a permanent failure at this address (push: counted; past a limit, the
    provider answers Deactivate instead)."""

    reason: str


@dataclass(frozen=True)
class Reached:
    """Effect: the address took a message (push: its failure count starts again)."""


@dataclass(frozen=True)
class KeepCopy:
    """Effect: keep what was 'sent' in the sandbox outbox (GET /v1/sandbox/messages)."""


@dataclass(frozen=True)
class Publish:
    """Effect: push the message to the user's live streams once it is recorded."""


Effect = Suppress | Deactivate | Strike | Reached | KeepCopy | Publish


@dataclass(frozen=True)
class SendResult:
    """The outcome: `sent`, `failed` (permanent) or `retry` (after `retry_after` seconds)."""

    status: str
    reason: str | None = None
    provider_id: str | None = None
    # Stored on the message: what the recipient actually got.
    rendered: dict[str, Any] | None = None
    # For `retry`: the provider's Retry-After; None means our exponential backoff.
    retry_after: float | None = None
    effects: tuple[Effect, ...] = ()
    # SMS: the segments the body took (recorded on the message).
    segments: int | None = None


class Retry(Exception):
    """A transient failure: try again after `delay` seconds (a Retry-After, a timeout...)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


@dataclass(frozen=True)
class ProviderContext:
    """What a provider may read: the process settings and the project's settings."""

    settings: Mapping[str, Any]
    project_settings: Mapping[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    """A channel provider; it holds no transaction and touches no database."""

    name: str
    channels: frozenset[str]

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Send one message."""
        ...
