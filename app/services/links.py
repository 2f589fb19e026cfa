"""Signed links in what Cairn sends: open pixel, click redirect, unsubscribe, preferences.

A token is the payload signed with SECRET_KEY (HMAC, one salt per kind, so a token of one
kind never passes for another). A click token carries its own target: the redirect goes only
where the token says, so `/t/c/...` can never be an open redirect. Tokens do not expire (an
unsubscribe link in a year-old email must still work); they change nothing by themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

# kind -> the path its links live under (the token follows).
PATHS = {
    "open": "/t/o/",
    "click": "/t/c/",
    "unsubscribe": "/u/",
    "preferences": "/p/",
}


class BadToken(ValueError):
    """The token is malformed, forged or of another kind."""


def _serializer(secret: str, kind: str) -> URLSafeSerializer:
    if kind not in PATHS:
        raise KeyError(kind)
    return URLSafeSerializer(secret, salt=f"cairn-link-{kind}")


def sign(secret: str, kind: str, payload: Any) -> str:
    """A URL-safe token for `payload` (JSON-serialisable)."""
    token: str = _serializer(secret, kind).dumps(payload)
    return token


def verify(secret: str, kind: str, token: str) -> Any:
    """The payload of a token of this kind; BadToken if it is not one."""
    try:
        return _serializer(secret, kind).loads(token)
    except BadSignature:
        raise BadToken(f"not a valid {kind} link") from None


def link(settings: Mapping[str, Any], kind: str, payload: Any) -> str:
    """The absolute URL (under PUBLIC_URL) of a signed link."""
    suffix = ".gif" if kind == "open" else ""
    token = sign(settings["SECRET_KEY"], kind, payload)
    return f"{settings['PUBLIC_URL']}{PATHS[kind]}{token}{suffix}"


def open_url(settings: Mapping[str, Any], message_id: int) -> str:
    """The open pixel of a message."""
    return link(settings, "open", {"m": message_id})


def click_url(settings: Mapping[str, Any], message_id: int, target: str) -> str:
    """A tracked link: records the click, then redirects to `target` (and only there)."""
    return link(settings, "click", {"m": message_id, "u": target})


def unsubscribe_url(
    settings: Mapping[str, Any], *, project_id: int, channel: str, address: str, message_id: int
) -> str:
    """One-click unsubscribe (RFC 8058) of `address` from marketing on `channel`."""
    return link(
        settings, "unsubscribe", {"p": project_id, "c": channel, "a": address, "m": message_id}
    )


def preferences_url(settings: Mapping[str, Any], *, project_id: int, user_id: int) -> str:
    """The person's preference page (topics, channels, marketing opt-out)."""
    return link(settings, "preferences", {"p": project_id, "u": user_id})
