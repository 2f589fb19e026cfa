"""What a journey step asks the world to do, as data: the worker applies it, the steps decide.

Pure values only. `Send` and `CallWebhook` carry the (step, visit) of the run that made them:
the worker stores the message or the call under a unique (run, step, visit), so an advance that
is retried or redelivered yields the same keys and never sends or calls twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Send:
    """Send the template on the channel to the run's user (policies apply: quiet hours, caps)."""

    channel: str
    template: int | str
    step: str
    visit: int


@dataclass(frozen=True)
class Wake:
    """Advance the run again at this moment (the run's `wake_at`, indexed for the sweeper)."""

    at: datetime


@dataclass(frozen=True)
class AudienceChange:
    """Add the user to (with an optional TTL) or remove them from an audience."""

    action: str  # "add" | "remove"
    audience: int | str
    ttl_seconds: int | None = None
    step: str = ""
    visit: int = 0


@dataclass(frozen=True)
class SetAttributes:
    """Merge these attributes into the user's profile (a null value deletes the key)."""

    attributes: Mapping[str, Any] = field(default_factory=dict)
    step: str = ""
    visit: int = 0


@dataclass(frozen=True)
class CallWebhook:
    """POST `body` to `url` (signed, SSRF-checked by the worker), then advance the run again
    with the response as `RunFacts.webhook_result` for this (step, visit)."""

    url: str
    body: Any
    save_as: str | None
    step: str
    visit: int


@dataclass(frozen=True)
class Exit:
    """The run ended (an exit step, an exit event, leaving a segment, or a broken step)."""

    reason: str


@dataclass(frozen=True)
class Converted:
    """The run reached the journey's goal and ended as converted."""

    event: str


Effect: TypeAlias = Send | Wake | AudienceChange | SetAttributes | CallWebhook | Exit | Converted
