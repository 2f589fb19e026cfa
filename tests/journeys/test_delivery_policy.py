"""The delivery plan: ordered pure policies, each decision with its reason."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from journeys.delivery_policy import (
    DEFER,
    EXPIRE,
    POLICIES,
    SEND,
    SUPPRESS,
    Candidate,
    Decision,
    FrequencyCap,
    QuietHours,
    plan,
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
    assert [p.__name__ for p in POLICIES] == ["ttl", "suppression", "quiet_hours", "frequency_cap"]

    def weekend(c: Candidate) -> Decision | None:
        return Decision(SUPPRESS, "no weekends") if c.now.weekday() >= 5 else None

    saturday = NOW + timedelta(days=2)
    assert plan(Candidate(now=saturday), (*POLICIES, weekend)) == Decision(SUPPRESS, "no weekends")
