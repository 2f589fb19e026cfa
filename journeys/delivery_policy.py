"""Whether a message may be sent now: an ordered list of pure policies, each with its reason.

This module does no I/O and touches no globals: the delivery worker loads what a message's
policies look at into a `Candidate`, and `plan` answers a `Decision`. The first policy with an
opinion decides; a message no policy stops is sent. A new rule (a preference, a per-channel
cap) is one function here and one entry in `POLICIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

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


# Suppression reasons that stop marketing only: the person said "not this kind of message".
# Every other reason (a hard bounce, a carrier STOP, an invalid number, a manual block) means
# the address must get nothing, transactional messages included.
MARKETING_ONLY_REASONS = frozenset({"unsubscribed", "complaint"})


def suppression_blocks(reason: str, *, transactional: bool) -> bool:
    """Whether a suppression with this reason stops a (transactional or marketing) message."""
    return not transactional or reason not in MARKETING_ONLY_REASONS


@dataclass(frozen=True)
class Preferences:
    """What a person chose on their preference page (`users.preferences`).

    `channels` and `topics` hold only explicit choices: a channel absent is on, a topic absent
    follows the topic's default (or the person's membership of its audience).
    """

    marketing: bool = True
    channels: Mapping[str, bool] = field(default_factory=dict)
    topics: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Any) -> Preferences:
        """Read the stored JSON leniently: anything malformed counts as no choice."""
        if not isinstance(raw, Mapping):
            return cls()

        def flags(value: Any) -> dict[str, bool]:
            if not isinstance(value, Mapping):
                return {}
            return {str(k): v for k, v in value.items() if isinstance(v, bool)}

        marketing = raw.get("marketing")
        return cls(
            marketing=marketing if isinstance(marketing, bool) else True,
            channels=flags(raw.get("channels")),
            topics=flags(raw.get("topics")),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored shape."""
        return {
            "marketing": self.marketing,
            "channels": dict(self.channels),
            "topics": dict(self.topics),
        }


def subscribed(
    preferences: Preferences | None, topic: str, *, default: bool, member: bool = False
) -> bool:
    """Whether a person is in a topic: their explicit choice, else membership, else default.

    An opt-out topic (`default` true) has everyone in until they leave; an opt-in one only
    those who joined (on the page, or added to the `topic:<key>` audience).
    """
    choice = preferences.topics.get(topic) if preferences is not None else None
    if choice is not None:
        return choice
    return member or default


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """Everything the policies look at for one message."""

    now: datetime
    # Transactional messages (codes, receipts) bypass marketing opt-outs, topics, quiet hours
    # and caps; never a hard bounce or a STOP (see MARKETING_ONLY_REASONS).
    transactional: bool = False
    expires_at: datetime | None = None
    # The reason the address is on the suppression list, if it is.
    suppressed: str | None = None
    channel: str | None = None
    # The person's choices (None: no user, or nothing chosen).
    preferences: Preferences | None = None
    # The send's topic, whether the project's topic is opt-out (`default`), and whether the
    # person is a current member of its `topic:<key>` audience.
    topic: str | None = None
    topic_default: bool = False
    topic_member: bool = False
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
    """The address is on the suppression list: an unsubscribe or a complaint stops marketing,
    any other reason (bounce, stop, invalid, manual) stops transactional messages too."""
    if c.suppressed is not None and suppression_blocks(c.suppressed, transactional=c.transactional):
        return Decision(SUPPRESS, f"address suppressed ({c.suppressed})")
    return None


def marketing_opt_out(c: Candidate) -> Decision | None:
    """The person turned marketing off altogether."""
    if c.transactional or c.preferences is None or c.preferences.marketing:
        return None
    return Decision(SUPPRESS, "opted out of marketing")


def channel_opt_out(c: Candidate) -> Decision | None:
    """The person turned marketing off on this channel."""
    if c.transactional or c.preferences is None or c.channel is None:
        return None
    if c.preferences.channels.get(c.channel) is False:
        return Decision(SUPPRESS, f"opted out of {c.channel}")
    return None


def topic(c: Candidate) -> Decision | None:
    """A topic send reaches only the topic's subscribers."""
    if c.transactional or c.topic is None:
        return None
    if subscribed(c.preferences, c.topic, default=c.topic_default, member=c.topic_member):
        return None
    return Decision(SUPPRESS, f"not subscribed to topic {c.topic}")


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
POLICIES: tuple[Policy, ...] = (
    ttl,
    suppression,
    marketing_opt_out,
    channel_opt_out,
    topic,
    quiet_hours,
    frequency_cap,
)


def plan(candidate: Candidate, policies: tuple[Policy, ...] = POLICIES) -> Decision:
    """The first policy's decision, or `send`."""
    for policy in policies:
        decision = policy(candidate)
        if decision is not None:
            return decision
    return Decision(SEND)
