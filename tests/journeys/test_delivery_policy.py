"""The delivery plan: ordered pure policies, each decision with its reason."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from journeys.delivery_policy import (
    DEFER,
    EXPIRE,
    MARKETING_ONLY_REASONS,
    POLICIES,
    SEND,
    SUPPRESS,
    Candidate,
    Decision,
    FrequencyCap,
    Preferences,
    QuietHours,
    plan,
    subscribed,
    suppression_blocks,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)  # 21:00 in Tokyo
NIGHT = QuietHours(start=time(20, 0), end=time(8, 0), mode="defer", timezone="UTC")


def test_nothing_in_the_way_means_send():
    assert plan(Candidate(now=NOW)) == Decision(SEND)


def test_ttl_comes_first_then_suppression():
    late = Candidate(now=NOW, expires_at=NOW, suppressed="unsubscribed")
    assert plan(late) == Decision(EXPIRE, "TTL passed before it could be sent")
    assert plan(Candidate(now=NOW, expires_at=NOW + timedelta(seconds=1))).action == SEND
    blocked = Candidate(now=NOW, suppressed="bounced", transactional=True)
    assert plan(blocked) == Decision(SUPPRESS, "address suppressed (bounced)")


def test_quiet_hours_in_the_users_zone_defer_or_drop_and_transactional_bypasses():
    tokyo = Candidate(now=NOW, user_timezone="Asia/Tokyo", quiet_hours=NIGHT)
    decision = plan(tokyo)
    assert decision.action == DEFER
    assert decision.until == datetime(2026, 1, 15, 23, 0, tzinfo=UTC)  # 08:00 in Tokyo
    assert decision.reason == f"quiet hours: deferred to {decision.until.isoformat()}"
    # The project's zone (UTC here: 12:00) is outside the window.
    assert plan(Candidate(now=NOW, quiet_hours=NIGHT)).action == SEND
    drop = QuietHours(start=time(20, 0), end=time(8, 0), mode="drop")
    assert plan(Candidate(now=NOW, user_timezone="Asia/Tokyo", quiet_hours=drop)) == Decision(
        SUPPRESS, "quiet hours"
    )
    urgent = Candidate(now=NOW, user_timezone="Asia/Tokyo", quiet_hours=NIGHT, transactional=True)
    assert plan(urgent).action == SEND


def test_frequency_cap_counts_only_marketing():
    cap = FrequencyCap(count=2, window_seconds=3600)
    assert plan(Candidate(now=NOW, cap=cap, recent=1)).action == SEND
    assert plan(Candidate(now=NOW, cap=cap, recent=2)) == Decision(
        SUPPRESS, "frequency cap: 2 per 3600 s reached"
    )
    assert plan(Candidate(now=NOW, cap=cap, recent=5, transactional=True)).action == SEND
    assert plan(Candidate(now=NOW, cap=cap, recent=None)).action == SEND  # no user to count


def test_the_policy_list_is_ordered_and_extensible():
    assert [p.__name__ for p in POLICIES] == [
        "ttl",
        "suppression",
        "marketing_opt_out",
        "channel_opt_out",
        "topic",
        "quiet_hours",
        "frequency_cap",
    ]

    def weekend(c: Candidate) -> Decision | None:
        return Decision(SUPPRESS, "no weekends") if c.now.weekday() >= 5 else None

    saturday = NOW + timedelta(days=2)
    assert plan(Candidate(now=saturday), (*POLICIES, weekend)) == Decision(SUPPRESS, "no weekends")


# --- suppression classes and preferences ----------------------------------------------------

STOPS_EVERYTHING = ("bounce", "bounced", "stop", "invalid", "manual", "anything-else")


@pytest.mark.parametrize("reason", sorted(MARKETING_ONLY_REASONS))
def test_unsubscribe_and_complaint_stop_marketing_only(reason):
    assert {"unsubscribed", "complaint"} == MARKETING_ONLY_REASONS
    marketing = Candidate(now=NOW, suppressed=reason)
    assert plan(marketing) == Decision(SUPPRESS, f"address suppressed ({reason})")
    assert plan(Candidate(now=NOW, suppressed=reason, transactional=True)) == Decision(SEND)
    assert suppression_blocks(reason, transactional=False)
    assert not suppression_blocks(reason, transactional=True)


@pytest.mark.parametrize("reason", STOPS_EVERYTHING)
@pytest.mark.parametrize("transactional", [False, True])
def test_bounces_stops_and_manual_blocks_stop_transactional_too(reason, transactional):
    c = Candidate(now=NOW, suppressed=reason, transactional=transactional)
    assert plan(c) == Decision(SUPPRESS, f"address suppressed ({reason})")
    assert suppression_blocks(reason, transactional=transactional)


def test_marketing_opt_out_stops_marketing_on_every_channel_not_transactional():
    off = Preferences(marketing=False)
    for channel in ("email", "sms", "push", "inapp"):
        c = Candidate(now=NOW, channel=channel, preferences=off)
        assert plan(c) == Decision(SUPPRESS, "opted out of marketing")
        assert plan(Candidate(now=NOW, channel=channel, preferences=off, transactional=True)) == (
            Decision(SEND)
        )
    assert plan(Candidate(now=NOW, channel="email", preferences=Preferences())) == Decision(SEND)


def test_channel_opt_out_stops_marketing_on_that_channel_only():
    prefs = Preferences(channels={"sms": False, "email": True})
    assert plan(Candidate(now=NOW, channel="sms", preferences=prefs)) == Decision(
        SUPPRESS, "opted out of sms"
    )
    assert plan(Candidate(now=NOW, channel="email", preferences=prefs)).action == SEND
    assert plan(Candidate(now=NOW, channel="push", preferences=prefs)).action == SEND
    urgent = Candidate(now=NOW, channel="sms", preferences=prefs, transactional=True)
    assert plan(urgent).action == SEND


def test_opt_out_topics_reach_everyone_until_they_leave():
    news = {"topic": "news", "topic_default": True}
    assert plan(Candidate(now=NOW, **news)).action == SEND  # no preferences at all
    assert plan(Candidate(now=NOW, preferences=Preferences(), **news)).action == SEND
    left = Preferences(topics={"news": False})
    assert plan(Candidate(now=NOW, preferences=left, **news)) == Decision(
        SUPPRESS, "not subscribed to topic news"
    )
    # Audience membership does not override an explicit leave.
    assert plan(Candidate(now=NOW, preferences=left, topic_member=True, **news)).action == (
        SUPPRESS
    )
    assert plan(Candidate(now=NOW, preferences=left, transactional=True, **news)).action == SEND


def test_opt_in_topics_reach_only_those_who_joined():
    offers = {"topic": "offers", "topic_default": False}
    assert plan(Candidate(now=NOW, **offers)) == Decision(
        SUPPRESS, "not subscribed to topic offers"
    )
    joined = Preferences(topics={"offers": True})
    assert plan(Candidate(now=NOW, preferences=joined, **offers)).action == SEND
    # Added to the topic:offers audience (API, import) without choosing on the page.
    assert plan(Candidate(now=NOW, topic_member=True, **offers)).action == SEND
    # Another topic's choice does not count.
    other = Preferences(topics={"news": True})
    assert plan(Candidate(now=NOW, preferences=other, **offers)).action == SUPPRESS
    assert plan(Candidate(now=NOW, transactional=True, **offers)).action == SEND
    # No topic on the send: topics do not matter.
    assert plan(Candidate(now=NOW, preferences=Preferences(topics={"offers": False}))).action == (
        SEND
    )


def test_subscribed_precedence():
    assert subscribed(None, "t", default=True)
    assert not subscribed(None, "t", default=False)
    assert subscribed(None, "t", default=False, member=True)
    assert not subscribed(Preferences(topics={"t": False}), "t", default=True, member=True)
    assert subscribed(Preferences(topics={"t": True}), "t", default=False)


def test_preferences_json_is_read_leniently():
    assert Preferences.from_json(None) == Preferences()
    assert Preferences.from_json("junk") == Preferences()
    raw = {"marketing": "no", "channels": {"sms": False, "push": 1}, "topics": ["x"]}
    assert Preferences.from_json(raw) == Preferences(channels={"sms": False})
    prefs = Preferences(marketing=False, channels={"sms": False}, topics={"news": True})
    assert Preferences.from_json(prefs.to_json()) == prefs


def test_hard_suppression_comes_before_preferences_and_ttl_before_all():
    c = Candidate(
        now=NOW,
        suppressed="stop",
        channel="sms",
        preferences=Preferences(marketing=False),
        transactional=True,
    )
    assert plan(c) == Decision(SUPPRESS, "address suppressed (stop)")
    late = Candidate(now=NOW, expires_at=NOW, preferences=Preferences(marketing=False))
    assert plan(late).action == EXPIRE
    # A marketing-only suppression on a marketing message keeps its own reason.
    both = Candidate(now=NOW, suppressed="complaint", preferences=Preferences(marketing=False))
    assert plan(both).reason == "address suppressed (complaint)"
