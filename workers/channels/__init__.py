"""The channel registry: one module per channel, registered by name in CHANNELS below.

Everything that differs per channel (content fields, address lookup in Python and SQL,
reachability, address normalisation, direct content, default provider) lives in its module;
callers look a channel up here and never switch on its name. Adding a channel = one module +
one line below. Providers have their own registry in `workers.channels.providers`.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import ColumnElement, FromClause

from workers.channels import email, inapp, push, sms
from workers.channels.base import Addressable, Channel

# Stored strings (messages.channel, templates.channels keys): never rename. The order is the
# one answers list channels in (and a template message's default channel order).
CHANNELS: dict[str, Channel] = {
    channel.name: channel
    for channel in (
        inapp.CHANNEL,
        email.CHANNEL,
        sms.CHANNEL,
        push.CHANNEL,
    )
}
NAMES: tuple[str, ...] = tuple(CHANNELS)


def get_channel(name: str) -> Channel:
    """The channel registered under `name`; KeyError for an unknown one."""
    return CHANNELS[name]


def reachable_channels(user: Addressable) -> frozenset[str]:
    """The channels this user has an address on (what segment filters call reachable)."""
    return frozenset(name for name, c in CHANNELS.items() if c.address_of(user) is not None)


def reachability_clauses() -> dict[str, Callable[[FromClause], ColumnElement[bool]]]:
    """Per channel, its reachability test over the users table (for the segment compiler)."""
    return {name: c.reachable_sql for name, c in CHANNELS.items()}
