"""Whether a message may be sent now: an ordered list of pure policies, each with its reason.

This module does no I/O and touches no globals: the delivery worker loads what a message's
policies look at into a `Candidate`, and `plan` answers a `Decision`. The first policy with an
opinion decides; a message no policy stops is sent. A new rule (a preference, a per-channel
cap) is one function here and one entry in `POLICIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time

from journeys.quiet_hours import quiet_until

SEND = "send"
EXPIRE = "expire"
SUPPRESS = "suppress"
DEFER = "defer"


@dataclass(frozen=True)
class QuietHours:
    """A daily local-time window: `defer` to its end, or `drop` what falls inside."""

    start: time
    end: time
    mode: str = "defer"
    # The project's zone, used for users without one.
    timezone: str = "UTC"


@dataclass(frozen=True)
class FrequencyCap:
    """At most `count` non-transactional messages per user in `window_seconds`."""

    count: int
    window_seconds: int


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """Everything the policies look at for one message."""

    now: datetime
    # Transactional messages (codes, receipts) bypass quiet hours and caps.
    transactional: bool = False
    expires_at: datetime | None = None
    # The reason the address is on the suppression list, if it is.
    suppressed: str | None = None
    user_timezone: str | None = None
    quiet_hours: QuietHours | None = None
    cap: FrequencyCap | None = None
    # Messages the user already received inside the cap's window (None: no user to count).
    recent: int | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with the message now, and why (stored as the message's reason)."""

    action: str
    reason: str | None = None
    # For `defer`: when to try again.
    until: datetime | None = None


Policy = Callable[[Candidate], Decision | None]


def ttl(c: Candidate) -> Decision | None:
    """Too late: its time to live passed before it could be sent."""
    if c.expires_at is not None and c.expires_at <= c.now:
        return Decision(EXPIRE, "TTL passed before it could be sent")
    return None


def suppression(c: Candidate) -> Decision | None:
    """The address is on the suppression list (unsubscribed, bounced, manual)."""
    if c.suppressed is not None:
        return Decision(SUPPRESS, f"address suppressed ({c.suppressed})")
    return None


def quiet_hours(c: Candidate) -> Decision | None:
    """Inside the window in the user's zone: defer to its end, or drop."""
    if c.transactional or c.quiet_hours is None:
        return None
    q = c.quiet_hours
    until = quiet_until(c.now, q.start, q.end, c.user_timezone or q.timezone)
    if until is None:
        return None
    if q.mode == "drop":
        return Decision(SUPPRESS, "quiet hours")
    return Decision(DEFER, f"quiet hours: deferred to {until.isoformat()}", until)


def frequency_cap(c: Candidate) -> Decision | None:
    """The user already got `count` messages in the window."""
    if c.transactional or c.cap is None or c.recent is None:
        return None
    if c.recent >= c.cap.count:
        return Decision(
            SUPPRESS, f"frequency cap: {c.cap.count} per {c.cap.window_seconds} s reached"
        )
    return None


# Order matters: the first policy with an opinion decides (and gives the reason).
POLICIES: tuple[Policy, ...] = (ttl, suppression, quiet_hours, frequency_cap)


def plan(candidate: Candidate, policies: tuple[Policy, ...] = POLICIES) -> Decision:
    """The first policy's decision, or `send`."""
    for policy in policies:
        decision = policy(candidate)
        if decision is not None:
            return decision
    return Decision(SEND)
