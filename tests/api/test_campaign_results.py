"""POST /v1/campaigns/{id}/simulate, GET /v1/campaigns/{id}/stats and goal attribution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from app.db import db
from app.models import Campaign, Event, Project, User
from app.models.base import utcnow
from app.models.campaign import CampaignConversion, CampaignHoldout
from app.models.message import FINAL, Message, Send, SendSkip
from journeys.campaigns import in_holdout
from journeys.filters import parse_filter, to_json
from tests.conftest import wait_for

TEMPLATE = {
    "name": "promo",
    "defaultLanguage": "en",
    "channels": {
        "inapp": {"en": {"title": "Sale", "body": "20% off"}},
        "email": {"en": {"subject": "Sale", "html": "<p>20% off</p>", "text": "20% off"}},
    },
}
# Created one by one, in this order (user ids 1..n on a fresh database).
PEOPLE: list[dict[str, Any]] = [
    {"userId": "optout", "email": "optout@example.com"},
    {"userId": "noemail"},
    {"userId": "tokyo", "email": "tokyo@example.com", "timezone": "Asia/Tokyo"},
    {"userId": "h1", "email": "h1@example.com"},
    {"userId": "capped", "email": "capped@example.com"},
    {"userId": "supp", "email": "supp@example.com"},
    {"userId": "outside", "email": "outside@example.com", "attributes": {"plan": "free"}},
    {"userId": "a1", "email": "a1@example.com"},
    {"userId": "h2", "email": "h2@example.com"},
    {"userId": "a2", "email": "a2@example.com"},
]


def _setup(app, api) -> dict[str, int]:
    """Users with one reason each not to get the campaign; returns external id -> user pk."""
    assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    tokyo_now = datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    quiet = {
        "start": (tokyo_now - timedelta(minutes=5)).strftime("%H:%M"),
        "end": (tokyo_now + timedelta(hours=1)).strftime("%H:%M"),
        "mode": "drop",
    }
    r = api.patch(
        "/v1/project",
        json={
            "settings": {
                "quietHours": quiet,
                "frequencyCap": {"count": 2, "windowSeconds": 3600},
            }
        },
    )
    assert r.status_code == 200, r.json
    for person in PEOPLE:
        body = {"attributes": {"plan": "pro"}, **person}
        assert api.post("/v1/users", json=body).status_code == 200
    r = api.post(
        "/v1/suppressions",
        json={"channel": "email", "address": "supp@example.com", "reason": "unsubscribed"},
    )
    assert r.json["added"] == 1
    now = utcnow()
    with app.app_context():
        ids = dict(db.session.execute(select(User.external_id, User.id)).all())
        db.session.get(User, ids["optout"]).preferences = {"marketing": False}
        # Two marketing messages this hour: the cap (2 per hour) is reached.
        for n in range(2):
            db.session.add(
                Message(
                    project_id=db.session.get(User, ids["capped"]).project_id,
                    user_id=ids["capped"],
                    channel="inapp",
                    address=f"user:{ids['capped']}:{n}",
                    status="sent",
                    sent_at=now - timedelta(minutes=5),
                )
            )
        db.session.commit()
    return ids


def _campaign(app, holdout_percent: int = 0, **extra: Any) -> int:
    from app.models import Template

    with app.app_context():
        template = db.session.scalar(select(Template))
        campaign = Campaign(
            project_id=template.project_id,
            name=f"spring-{holdout_percent}",
            kind="broadcast",
            status="draft",
            channels={"email": template.id, "inapp": template.id},
            target={"include": [to_json(parse_filter("plan:pro"))], "exclude": []},
            holdout_percent=holdout_percent,
            ttl_seconds=3600,
            **extra,
        )
        db.session.add(campaign)
        db.session.commit()
        return campaign.id


def _counts(app) -> dict[str, int]:
    with app.app_context():
        return {
            model.__name__: db.session.scalar(select(func.count()).select_from(model))
            for model in (Message, Send, SendSkip, CampaignHoldout, CampaignConversion, Event)
        }


def test_simulate_counts_every_skip_reason_and_writes_nothing(app, api):
    ids = _setup(app, api)
    campaign_id = _campaign(app, holdout_percent=10)
    held = {name for name, pk in ids.items() if in_holdout(campaign_id, pk, 10)}
    assert held == {"h1", "h2"}  # the population is built so the slice misses the others
    before = _counts(app)
    r = api.post(f"/v1/campaigns/{campaign_id}/simulate")
    assert r.status_code == 200, r.json
    assert r.json["skipped"] == {
        "not_in_target": 1,  # outside (plan free)
        "holdout": 2,
        "no_address": 1,  # noemail on email
        "opted_out": 3,  # optout on both channels, supp's suppressed email
        "quiet_hours": 2,  # tokyo, both channels (drop mode)
        "capped": 2,  # capped, both channels
    }
    # a1 and a2 on both channels; noemail and supp in-app only.
    assert r.json["reached"] == 4
    assert r.json["byChannel"] == {"email": 2, "inapp": 4}
    assert r.json["messages"] == 6
    assert r.json["evaluated"] == 9 and r.json["truncated"] is False
    assert r.json["deferred"] == {}
    # An immediate broadcast: everything in the current hour.
    assert len(r.json["schedule"]) == 1 and r.json["schedule"][0]["count"] == 6
    # The same by name; nothing was written (no message, send, skip, holdout row).
    assert api.post("/v1/campaigns/spring-10/simulate").json["skipped"] == r.json["skipped"]
    assert _counts(app) == before
    assert api.post("/v1/campaigns/999/simulate").status_code == 404
    assert api.get("/v1/campaigns/nope/stats").status_code == 404
    assert api.get(f"/v1/campaigns/{'9' * 30}/stats").status_code == 400
    assert api.post("/v1/campaigns/a%00b/simulate").status_code in (400, 404)


def test_simulate_defer_mode_reaches_later_and_a_window_or_local_time_skips(app, api):
    ids = _setup(app, api)
    settings = api.get("/v1/project").json["settings"]
    settings["quietHours"]["mode"] = "defer"
    assert api.patch("/v1/project", json={"settings": settings}).status_code == 200
    campaign_id = _campaign(app)
    r = api.post(f"/v1/campaigns/{campaign_id}/simulate").json
    # Deferred, not dropped (delivery queues it to the window's end): reached, counted, and
    # scheduled in a later hour.
    assert r["deferred"] == {"quiet_hours": 2}
    assert "quiet_hours" not in r["skipped"] and r["reached"] == 7
    assert r["byChannel"] == {"email": 5, "inapp": 7}
    assert sum(s["count"] for s in r["schedule"]) == 12
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign.starts_at = utcnow() + timedelta(days=1)
        db.session.commit()
    r = api.post(f"/v1/campaigns/{campaign_id}/simulate").json
    assert r["reached"] == 0 and r["skipped"] == {"not_in_target": 1, "outside_window": 9}
    # A local-time broadcast: 10:00 tomorrow in each user's zone, UTC for those without one.
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign.starts_at = None
        campaign.schedule = {"sendAt": f"{tomorrow}T10:00:00", "deliverIn": "userTimezone"}
        # Quiet hours off, so every reachable message is in the schedule.
        project = db.session.get(Project, campaign.project_id)
        project.settings = {k: v for k, v in project.settings.items() if k != "quietHours"}
        db.session.commit()
    r = api.post(f"/v1/campaigns/{campaign_id}/simulate").json
    hours = {s["at"]: s["count"] for s in r["schedule"]}
    utc_10 = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, tzinfo=UTC)
    tokyo_10 = utc_10 - timedelta(hours=9)
    assert hours == {utc_10.isoformat(): 10, tokyo_10.isoformat(): 2}, hours
    # The zone's 10:00 already passed today (sendAt today 00:00): skipped by default.
    today = datetime.now(UTC).date()
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign.schedule = {"sendAt": f"{today}T00:00:00", "deliverIn": "userTimezone"}
        db.session.commit()
    r = api.post(f"/v1/campaigns/{campaign_id}/simulate").json
    assert r["reached"] == 0 and r["skipped"]["missed_local_time"] == 9
    assert ids


def _deliver_for_real(app, campaign_id: int) -> None:
    from app.services.campaign_sends import create_campaign_sends

    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        project = db.session.get(Project, campaign.project_id)
        create_campaign_sends(
            db.session,
            project=project,
            campaign=campaign,
            occurrence=utcnow().isoformat(),
            now=utcnow(),
            fan_out=True,
        )
        campaign.status = "active"
        db.session.commit()

    def settled() -> bool:
        with app.app_context():
            sends = list(db.session.scalars(select(Send).where(Send.campaign_id == campaign_id)))
            statuses = db.session.scalars(
                select(Message.status).where(Message.send_id.in_([s.id for s in sends]))
            ).all()
            return all(s.status == "done" for s in sends) and all(st in FINAL for st in statuses)

    wait_for(settled)


def test_simulate_equals_what_the_real_send_then_does(app, api, workers):
    _setup(app, api)
    campaign_id = _campaign(app)
    sim = api.post(f"/v1/campaigns/{campaign_id}/simulate").json
    _deliver_for_real(app, campaign_id)
    with app.app_context():
        rows = db.session.execute(
            select(Message.user_id, Message.channel, Message.status)
            .join(Send, Send.id == Message.send_id)
            .where(Send.campaign_id == campaign_id)
        ).all()
    reached = [(u, c) for u, c, s in rows if s == "sent"]
    assert sim["reached"] == len({u for u, _ in reached})
    assert sim["byChannel"] == {
        c: sum(1 for _, ch in reached if ch == c) for c in {c for _, c in reached}
    }
    stats = api.get(f"/v1/campaigns/{campaign_id}/stats").json
    assert stats["sent"] == sim["messages"]
    # What the real send recorded as skipped (suppressed messages by reason, the sends'
    # counts) is what the dry run said. Fan-out counts neither users outside the target nor,
    # yet, users without an address: those two are compared only when it does.
    real = dict(stats["skipped"])
    expected = {k: v for k, v in sim["skipped"].items() if k not in ("not_in_target",)}
    if "no_address" not in real:
        expected.pop("no_address")
    assert real == expected
    assert expected == {"opted_out": 3, "quiet_hours": 2, "capped": 2} | (
        {"no_address": 1} if "no_address" in real else {}
    )


def test_stats_count_statuses_engagement_conversions_and_holdout_lift(app, api, workers):
    from app.services.campaign_goals import on_event
    from app.services.engagement import Visit, record_click, record_open

    ids = _setup(app, api)
    goal = {
        "event": "purchase",
        "where": to_json(parse_filter("currency:USD")),
        "valueField": "amount",
        "within": 3600,
    }
    campaign_id = _campaign(app, goal=goal)
    _deliver_for_real(app, campaign_id)
    browser = Visit("Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0", "203.0.113.9")
    later = utcnow() + timedelta(seconds=30)
    with app.app_context():
        email = dict(
            db.session.execute(
                select(Message.user_id, Message.id).where(
                    Message.channel == "email",
                    Message.status == "sent",
                    Message.send_id != None,  # noqa: E711
                )
            ).all()
        )
        assert record_open(db.session, message_id=email[ids["a1"]], visit=browser, now=later)
        assert record_click(
            db.session,
            message_id=email[ids["a2"]],
            target="https://x.test",
            visit=browser,
            now=later,
        )
        project = db.session.get(Project, db.session.get(Campaign, campaign_id).project_id)
        # Users who got nothing stand for the holdout slice here (fan-out's holdout is
        # another part's; what matters is the rows).
        for name in ("capped", "tokyo", "optout", "outside"):
            db.session.add(
                CampaignHoldout(
                    project_id=project.id,
                    campaign_id=campaign_id,
                    user_id=ids[name],
                    at=utcnow() - timedelta(seconds=5),
                )
            )
        db.session.commit()

    def event(name: str, user: str, props: dict[str, Any], at: datetime) -> int:
        with app.app_context():
            row = Event(
                project_id=project.id,
                user_id=ids[user],
                name=name,
                properties=props,
                timestamp=at,
                processed_at=at,
            )
            db.session.add(row)
            db.session.flush()
            n = on_event(
                db.session,
                project=db.session.get(Project, project.id),
                user=db.session.get(User, ids[user]),
                event=row,
                now=utcnow(),
            )
            # The event processor may run it twice (a redelivered job): counted once.
            again = on_event(
                db.session,
                project=db.session.get(Project, project.id),
                user=db.session.get(User, ids[user]),
                event=row,
                now=utcnow(),
            )
            db.session.commit()
            assert again == 0
            return n

    soon = utcnow() + timedelta(minutes=1)
    assert event("purchase", "a1", {"currency": "USD", "amount": 30}, soon) == 1
    assert event("purchase", "a2", {"currency": "USD", "amount": "12.5"}, soon) == 1
    assert event("purchase", "noemail", {"currency": "USD"}, soon) == 1  # no value: counted
    assert event("purchase", "supp", {"currency": "EUR", "amount": 99}, soon) == 0  # where
    assert event("checkout", "supp", {"currency": "USD", "amount": 99}, soon) == 0  # event
    # Outside the attribution window (2 h after the message), and before it.
    assert event("purchase", "supp", {"currency": "USD"}, utcnow() + timedelta(hours=2)) == 0
    assert event("purchase", "supp", {"currency": "USD"}, utcnow() - timedelta(hours=1)) == 0
    assert event("purchase", "tokyo", {"currency": "USD", "amount": 5}, soon) == 1  # holdout
    stats = api.get(f"/v1/campaigns/{campaign_id}/stats").json
    # h1, a1, h2, a2 on both channels, noemail and supp in-app; a1 opened, a2 clicked.
    assert stats["statuses"] == {"sent": 8, "opened": 1, "clicked": 1, "suppressed": 7}
    assert (stats["sent"], stats["delivered"], stats["opened"], stats["clicked"]) == (10, 2, 2, 1)
    assert stats["suppressed"] == 7 and stats["failed"] == 0 and stats["queued"] == 0
    assert stats["byChannel"] == {
        "email": {"sent": 2, "opened": 1, "clicked": 1, "suppressed": 4},
        "inapp": {"sent": 6, "suppressed": 3},
    }
    assert stats["messagedUsers"] == 6
    assert (stats["converted"], stats["convertedUsers"], stats["revenue"]) == (3, 3, 42.5)
    assert stats["conversionRate"] == 0.5
    # Holdout: 1 of 4 converted (25 %) against 50 % of the messaged: lift +100 %.
    assert stats["holdout"] == {
        "size": 4,
        "converted": 1,
        "convertedUsers": 1,
        "revenue": 5.0,
        "conversionRate": 0.25,
        "lift": 1.0,
    }
    assert stats["skipped"] == {"opted_out": 3, "quiet_hours": 2, "capped": 2}
    with app.app_context():
        a1 = db.session.scalar(
            select(CampaignConversion).where(CampaignConversion.user_id == ids["a1"])
        )
        assert a1.message_id is not None and not a1.holdout and float(a1.value) == 30.0


def test_simulate_schedule_for_a_rate_limited_broadcast_a_cron_and_a_trigger(app, api):
    _setup(app, api)
    with app.app_context():
        project = db.session.scalar(select(Project))
        project.settings = {k: v for k, v in project.settings.items() if k != "quietHours"}
        db.session.commit()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    campaign_id = _campaign(app, schedule={"sendAt": f"{tomorrow}T10:55:00Z"}, rate_per_minute=2)
    r = api.post(f"/v1/campaigns/{campaign_id}/simulate").json
    # 12 messages at 2 a minute from 10:55: ten before 11:00, two after.
    at = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, 55, tzinfo=UTC)
    assert r["messages"] == 12 and r["at"] == at.isoformat()
    assert r["schedule"] == [
        {"at": at.replace(minute=0).isoformat(), "count": 10},
        {"at": at.replace(hour=11, minute=0).isoformat(), "count": 2},
    ]
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign.kind = "recurring"
        campaign.schedule = {"cron": "30 9 * * *", "timezone": "Asia/Tokyo"}
        campaign.rate_per_minute = None
        db.session.commit()
    r = api.post(f"/v1/campaigns/{campaign_id}/simulate").json
    # The next 09:30 in Tokyo (00:30 UTC).
    tick = datetime.fromisoformat(r["at"])
    assert tick > datetime.now(UTC) and (tick.hour, tick.minute) == (0, 30)
    assert tick - datetime.now(UTC) <= timedelta(days=1)
    assert r["schedule"] == [{"at": tick.replace(minute=0).isoformat(), "count": 12}]
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign.kind = "triggered"
        campaign.schedule = None
        db.session.commit()
    r = api.post(f"/v1/campaigns/{campaign_id}/simulate").json
    assert r["messages"] == 12 and r["schedule"] == []


def test_a_tracked_goal_event_converts_through_the_event_processor(app, api, workers):
    ids = _setup(app, api)
    goal = {"event": "purchase", "valueField": "amount", "within": 600}
    campaign_id = _campaign(app, goal=goal)
    _deliver_for_real(app, campaign_id)
    r = api.post(
        "/v1/events", json={"name": "purchase", "userId": "a1", "properties": {"amount": 19.99}}
    )
    assert r.status_code in (200, 202), r.json
    api.post("/v1/events", json={"name": "purchase", "userId": "optout"})  # got nothing

    def conversions() -> list[tuple[int, float]]:
        with app.app_context():
            rows = db.session.execute(
                select(CampaignConversion.user_id, CampaignConversion.value)
            ).all()
            return [(u, float(v)) for u, v in rows]

    assert wait_for(conversions) == [(ids["a1"], 19.99)]
    stats = api.get(f"/v1/campaigns/{campaign_id}/stats").json
    assert (stats["converted"], stats["revenue"]) == (1, 19.99)

    def processed() -> bool:
        with app.app_context():
            return not db.session.scalar(
                select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
            )

    wait_for(processed)
    assert conversions() == [(ids["a1"], 19.99)]
