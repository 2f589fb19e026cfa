"""Channel providers: one module per provider, registered by name in PROVIDERS.

A provider turns one rendered message into a `SendResult`. Only transient failures raise
`Retry`; permanent ones are results. Adding a provider = one module + one line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


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


@dataclass(frozen=True)
class SendResult:
    """The outcome: `sent` or `failed` (permanent), with a reason and the provider's id."""

    status: str
    reason: str | None = None
    provider_id: str | None = None
    # Stored on the message: what the recipient actually got.
    rendered: dict[str, Any] | None = None


class Retry(Exception):
    """A transient failure: try again after `delay` seconds (a Retry-After, a timeout...)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


@dataclass
class ProviderContext:
    """Side doors a provider may use: store a row (sandbox), publish (in-app), settings."""

    store_sandbox: Callable[[Delivery], None]
    publish: Callable[[Delivery], None]
    settings: dict[str, Any]


class Provider(Protocol):
    """A channel provider."""

    name: str
    channel: str

    def send(self, delivery: Delivery, ctx: ProviderContext) -> SendResult:
        """Send one message."""
        ...


# name -> "module:attribute"; looked up, never switched on.
PROVIDERS: dict[str, str] = {
    "inapp": "workers.channels.inapp:InAppProvider",
    "sandbox-email": "workers.channels.sandbox:SandboxEmailProvider",
    "sandbox-sms": "workers.channels.sandbox:SandboxSmsProvider",
}

_instances: dict[str, Provider] = {}


def get_provider(name: str) -> Provider:
    """The provider registered under `name` (instances are created once per process)."""
    if name not in _instances:
        module_name, _, attr = PROVIDERS[name].partition(":")
        _instances[name] = getattr(importlib.import_module(module_name), attr)()
    return _instances[name]


def provider_for(channel: str, settings: dict[str, Any]) -> str | None:
    """Which provider serves a channel under these settings (None: channel not available)."""
    configured = settings.get(f"{channel.upper()}_PROVIDER")
    if configured:
        return str(configured)
    return {"inapp": "inapp", "email": "sandbox-email", "sms": "sandbox-sms"}.get(channel)
