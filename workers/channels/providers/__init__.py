"""The provider registry: one module per provider, registered by name in PROVIDERS below.

A provider turns one rendered message into a `SendResult` (with effects for our data) and
never opens a transaction. Adding a provider = one module + one line below. Which provider
serves a channel: the project's `settings.providers[<channel>]`, else the `<CHANNEL>_PROVIDER`
setting, else the provider whose credentials are set (`SMTP_URL` → `smtp`), else the
channel's default.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

from workers.channels import CHANNELS
from workers.channels.base import Provider

# name -> "module:attribute"; looked up, never switched on. Stored in messages.provider.
PROVIDERS: dict[str, str] = {
    "inapp": "workers.channels.providers.inapp:InAppProvider",
    "sandbox": "workers.channels.providers.sandbox:SandboxProvider",
    "webpush": "workers.channels.providers.webpush:WebPushProvider",
    "smtp": "workers.channels.providers.smtp:SmtpProvider",
    "twilio": "workers.channels.providers.twilio:TwilioProvider",
    "webhook": "workers.channels.providers.sms_webhook:SmsWebhookProvider",
}

_instances: dict[tuple[str, str], Provider] = {}
_lock = threading.Lock()


def get_provider(name: str) -> Provider:
    """The provider registered under `name` (one instance per process); KeyError if unknown."""
    target = PROVIDERS[name]
    with _lock:
        # Keyed by the target too, so a test re-registering a name gets its own class.
        if (name, target) not in _instances:
            module_name, _, attr = target.partition(":")
            _instances[(name, target)] = getattr(importlib.import_module(module_name), attr)()
        return _instances[(name, target)]


def setting_name(channel: str) -> str:
    """The setting (environment variable) choosing a channel's provider: `EMAIL_PROVIDER`."""
    return f"{channel.upper()}_PROVIDER"


def provider_problem(channel: str, name: Any) -> str | None:
    """Why `name` cannot serve `channel` (None: it can)."""
    if channel not in CHANNELS:
        return f"unknown channel; known: {', '.join(CHANNELS)}"
    if not isinstance(name, str) or name not in PROVIDERS:
        return f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}"
    served = get_provider(name).channels
    if channel not in served:
        return f"provider {name!r} does not send {channel} (it sends {', '.join(sorted(served))})"
    return None


def provider_for(
    channel: str, settings: Mapping[str, Any], project_settings: Mapping[str, Any] | None = None
) -> str | None:
    """Which provider serves a channel (None: the channel has no provider)."""
    chosen = ((project_settings or {}).get("providers") or {}).get(channel)
    if chosen:
        return str(chosen)
    configured = settings.get(setting_name(channel))
    if configured:
        return str(configured)
    for credential, provider in CHANNELS[channel].credential_providers:
        if settings.get(credential):
            return provider
    return CHANNELS[channel].default_provider
