"""Scheduled campaigns: when they send (UTC, each user's zone, cron, DST), exactly once, at
what rate, with holdout, pause/resume, expiry, completion and auto-pause.

Time is simulated by calling plan / start_run / the sweep steps with an explicit `now`; the
tests that need the real thing run the embedded scheduler and workers.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, insert, select, text, update

from app.db import db
from app.models import Campaign, CampaignHoldout, CampaignRun, User
from app.models.base import utcnow
from app.models.message import Message, Send
from journeys.campaigns import holdout_bucket, in_holdout
from tests.conftest import wait_for
from workers import campaign_schedule as cs
from workers import fanout
from workers.delivery import deliver_batch
from workers.sweeper import sweep
from workers.sweeps import campaign_runs

TEMPLATE = {"name": "news", "channels": {"inapp": {"en": {"title": "News", "body": "Hello"}}}}


def _users(app, project_id: int, zones: list[str | None]) -> None:
    """Bulk users (one executemany), `u<i>` in the given zones."""
    now = utcnow()
    with app.app_context():
        db.session.execute(
            insert(User),
            [
                {
                    "project_id": project_id,
                    "external_id": f"u{i}",
                    "timezone": zone,
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i, zone in enumerate(zones)
            ],
        )
        db.session.commit()


def _campaign(api, **fields) -> dict:
    if api.get("/v1/templates/news").status_code != 200:
        assert api.post("/v1/templates", json=TEMPLATE).status_code == 201
    body = {"name": "c1", "kind": "broadcast", "channels": {"inapp": "news"}, **fields}
    r = api.post("/v1/campaigns", json=body)
    assert r.status_code == 201, r.json
    return r.json


def _activate(api, campaign_id: int) -> dict:
    r = api.post(f"/v1/campaigns/{campaign_id}/activate")
    assert r.status_code == 200, r.json
    return r.json


def _runs(app, campaign_id: int) -> list[CampaignRun]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(CampaignRun)
                .where(CampaignRun.campaign_id == campaign_id)
                .order_by(CampaignRun.occurrence)
            )
        )


def _per_address(app) -> Counter:
    with app.app_context():
        return Counter(db.session.scalars(select(Message.address).where(Message.status == "sent")))


def _step(app, fn, *args, **kwargs):
    """Call a schedule function in its own committed transaction."""
    with app.app_context(), db.sessionmaker() as session:
        out = fn(session, *args, **kwargs)
        session.commit()
        return out


def _fan_out_all(app) -> None:
    with app.app_context():
        ids = list(db.session.scalars(select(Send.id).where(Send.status == "fanning_out")))
    for send_id in ids:
        with app.app_context(), db.sessionmaker() as session:
            fanout.fan_out(session, send_id)


def _deliver(app, ids=None) -> None:
    if ids is None:
        with app.app_context():
            ids = list(db.session.scalars(select(Message.id).where(Message.status == "queued")))
    with app.app_context(), db.sessionmaker() as session:
        deliver_batch(session, ids, dict(app.config))


# --- time: zones, DST, cron (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("wall", "zone", "utc"),
    [
        # spring forward: 02:30 does not exist → the first valid instant after (03:00 local)
        ("2026-03-29T02:30:00", "Europe/Paris", "2026-03-29T01:00:00"),
        ("2026-03-08T02:30:00", "America/New_York", "2026-03-08T07:00:00"),
        # fall back: 02:30 / 01:30 happen twice → the first
        ("2026-10-25T02:30:00", "Europe/Paris", "2026-10-25T00:30:00"),
        ("2026-11-01T01:30:00", "America/New_York", "2026-11-01T05:30:00"),
        # an ordinary day
        ("2026-12-02T10:00:00", "Asia/Tokyo", "2026-12-02T01:00:00"),
    ],
)
def test_local_wall_time_on_dst_days(wall, zone, utc):
    got = cs.local_instant(datetime.fromisoformat(wall), zone)
    assert got == datetime.fromisoformat(utc).replace(tzinfo=UTC)


def test_cron_ticks_on_dst_days_neither_skip_nor_repeat():
    paris = {"cron": "30 2 * * *", "timezone": "Europe/Paris"}
    ticks, at = [], datetime(2026, 3, 27, 12, tzinfo=UTC)
    for _ in range(4):
        at = cs.cron_after(paris, at)
        ticks.append(cs.fmt_instant(at))
    # the gap day runs at 03:00 CEST, once; the day is not skipped
    assert ticks == [
        "2026-03-28T01:30:00Z",
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:30:00Z",
        "2026-03-31T00:30:00Z",
    ]
    ticks, at = [], datetime(2026, 10, 23, 12, tzinfo=UTC)
    for _ in range(3):
        at = cs.cron_after(paris, at)
        ticks.append(cs.fmt_instant(at))
    # the repeated 02:30 runs once (APScheduler's CronTrigger fires it twice)
    assert ticks == ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    hourly = {"cron": "0 * * * *", "timezone": "America/New_York"}
    ticks, at = [], datetime(2026, 11, 1, 4, 30, tzinfo=UTC)
    for _ in range(4):
        at = cs.cron_after(hourly, at)
        ticks.append(cs.fmt_instant(at))
    # every real hour once, through the repeated 01:00 (no loop, no gap)
    assert ticks == [
        "2026-11-01T05:00:00Z",
        "2026-11-01T06:00:00Z",
        "2026-11-01T07:00:00Z",
        "2026-11-01T08:00:00Z",
    ]


def test_schedule_checks_name_each_field():
    check = cs.schedule_problems
    assert check("recurring", {"schedule": {"cron": "0 10 * *"}}).keys() == {"schedule.cron"}
    assert check("recurring", {"schedule": {"cron": "0 25 * * *"}}).keys() == {"schedule.cron"}
    assert check("recurring", {"schedule": {"cron": "0 10 * * 1", "timezone": "Mars/X"}}) == {
        "schedule.timezone": ["not an IANA time zone name (e.g. Europe/Paris)"]
    }
    local = {"deliverIn": "userTimezone", "sendAt": "2026-12-02T10:00:00+01:00"}
    assert "without offset" in check("broadcast", {"schedule": local})["schedule.sendAt"][0]
    assert "schedule.sendAt" in check("broadcast", {"schedule": {"deliverIn": "userTimezone"}})
    assert check("broadcast", {"schedule": {"sendAt": "2026-12-02T10:00:00Z"}}) == {}
    assert check("broadcast", {"schedule": None}) == {}


def test_recurring_next_occurrence_follows_the_cron_and_the_window(app, api):
    c = _campaign(
        api,
        kind="recurring",
        schedule={"cron": "0 9 * * 1", "timezone": "Europe/Paris"},
        window={"endsAt": "2026-12-20T00:00:00Z"},
    )
    _activate(api, c["id"])
    with app.app_context():
        campaign = db.session.get(Campaign, c["id"])
        now = datetime(2026, 12, 1, 12, tzinfo=UTC)  # a Tuesday
        occ, fire_at = cs.next_occurrence(campaign, None, now)
        assert (occ, fire_at) == ("2026-12-07T08:00:00Z", datetime(2026, 12, 7, 8, tzinfo=UTC))
        assert cs.next_occurrence(campaign, "2026-12-07T08:00:00Z", now)[0] == (
            "2026-12-14T08:00:00Z"
        )
        # the next Monday is past the window's end: no job
        assert cs.next_occurrence(campaign, "2026-12-14T08:00:00Z", now) is None
        # scheduler down for two weeks: only the latest missed tick is planned (sent late or
        # recorded expired), not one per missed week
        later = datetime(2026, 12, 16, tzinfo=UTC)
        assert cs.next_occurrence(campaign, "2026-11-30T08:00:00Z", later)[0] == (
            "2026-12-14T08:00:00Z"
        )


# --- plan: per-zone runs, missed local times ------------------------------------------------


def test_local_time_broadcast_across_three_zones(app, api, project):
    zones = ["Asia/Tokyo", "Europe/Paris", "America/New_York", None, "Not/AZone", "Europe/Paris"]
    _users(app, project.id, zones)
    c = _campaign(api, schedule={"sendAt": "2026-12-02T10:00:00", "deliverIn": "userTimezone"})
    _activate(api, c["id"])
    with app.app_context():
        campaign = db.session.get(Campaign, c["id"])
        # planned 14 h before the wall time read as UTC: no zone on Earth has reached it yet
        occ, fire_at = cs.next_occurrence(campaign, None, utcnow())
    assert (occ, fire_at) == ("2026-12-02T10:00:00", datetime(2026, 12, 1, 20, tzinfo=UTC))
    now = datetime(2026, 12, 1, 20, tzinfo=UTC)
    _step(app, cs.plan, c["id"], occ, {}, now)
    _step(app, cs.plan, c["id"], occ, {}, now)  # a double fire creates nothing twice
    runs = {r.zone: r for r in _runs(app, c["id"])}
    assert {z: r.due_at.isoformat() for z, r in runs.items()} == {
        "Asia/Tokyo": "2026-12-02T01:00:00+00:00",
        "Europe/Paris": "2026-12-02T09:00:00+00:00",
        "America/New_York": "2026-12-02T15:00:00+00:00",
        "UTC": "2026-12-02T10:00:00+00:00",  # the project's zone (none set): users without one
    }
    assert all(r.status == "scheduled" for r in runs.values())
    assert runs["Asia/Tokyo"].occurrence == "2026-12-02T10:00:00|Asia/Tokyo"
    # Nothing starts before its zone's time; each zone's run reaches exactly its users.
    assert _step(app, cs.start_due_runs, datetime(2026, 12, 2, 0, 59, tzinfo=UTC), {}) == 0
    reached: dict[str, set[str]] = {}
    for zone in ("Asia/Tokyo", "Europe/Paris", "UTC", "America/New_York"):
        assert _step(app, cs.start_due_runs, runs[zone].due_at, {}) == 1
        _fan_out_all(app)
        with app.app_context():
            rows = db.session.execute(
                select(User.external_id)
                .join(Message, Message.user_id == User.id)
                .join(Send, Send.id == Message.send_id)
                .join(CampaignRun, CampaignRun.id == Send.run_id)
                .where(CampaignRun.zone == zone)
            )
            reached[zone] = {r[0] for r in rows}
    assert reached == {
        "Asia/Tokyo": {"u0"},
        "Europe/Paris": {"u1", "u5"},
        "America/New_York": {"u2"},
        "UTC": {"u3", "u4"},  # no zone, and a zone nobody knows
    }


def test_missed_local_time_is_skipped_or_sent_now_with_the_reason(app, api, project):
    _users(app, project.id, ["Asia/Tokyo", "Europe/Paris"])
    local = {"sendAt": "2026-12-02T10:00:00", "deliverIn": "userTimezone"}
    skip = _campaign(api, name="skip", schedule=local)
    now_ = _campaign(api, name="now", schedule={**local, "missedLocalTime": "sendNow"})
    for c in (skip, now_):
        _activate(api, c["id"])
    planned_at = datetime(2026, 12, 2, 5, tzinfo=UTC)  # 14:00 in Tokyo, 06:00 in Paris
    for c in (skip, now_):
        _step(app, cs.plan, c["id"], "2026-12-02T10:00:00", {}, planned_at)
    tokyo = {
        c["name"]: r for c in (skip, now_) for r in _runs(app, c["id"]) if r.zone == "Asia/Tokyo"
    }
    assert tokyo["skip"].status == "skipped"
    assert tokyo["skip"].reason == (
        "10:00 had already passed in Asia/Tokyo when planned (missedLocalTime: skip)"
    )
    assert tokyo["now"].status == "scheduled" and tokyo["now"].due_at == planned_at
    assert "sent now (missedLocalTime: sendNow)" in tokyo["now"].reason
    paris = next(r for r in _runs(app, skip["id"]) if r.zone == "Europe/Paris")
    assert paris.status == "scheduled" and paris.due_at == datetime(2026, 12, 2, 9, tzinfo=UTC)


def test_local_time_broadcast_on_dst_days(app, api, project):
    _users(app, project.id, ["Europe/Paris", "America/New_York"])
    local = {"deliverIn": "userTimezone"}
    spring = _campaign(api, name="spring", schedule={**local, "sendAt": "2026-03-29T02:30:00"})
    fall = _campaign(api, name="fall", schedule={**local, "sendAt": "2026-11-01T01:30:00"})
    for c in (spring, fall):
        _activate(api, c["id"])
    _step(app, cs.plan, spring["id"], "2026-03-29T02:30:00", {}, datetime(2026, 3, 28, tzinfo=UTC))
    _step(app, cs.plan, fall["id"], "2026-11-01T01:30:00", {}, datetime(2026, 10, 31, tzinfo=UTC))
    due = {(c["name"], r.zone): r.due_at for c in (spring, fall) for r in _runs(app, c["id"])}
    assert due[("spring", "Europe/Paris")] == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00
    assert due[("spring", "America/New_York")] == datetime(2026, 3, 29, 6, 30, tzinfo=UTC)
    assert due[("fall", "America/New_York")] == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 1st
    assert due[("fall", "Europe/Paris")] == datetime(2026, 11, 1, 0, 30, tzinfo=UTC)


# --- late, expired, completed, auto-paused --------------------------------------------------


def test_a_run_past_its_ttl_is_expired_and_one_within_it_sent_late_once(app, api, project):
    _users(app, project.id, [None, None])
    due = "2026-12-02T10:00:00Z"
    short = _campaign(api, name="short", schedule={"sendAt": due}, ttlSeconds=60)
    long_ = _campaign(api, name="long", schedule={"sendAt": due}, ttlSeconds=3600)
    t = datetime(2026, 12, 2, 10, tzinfo=UTC)
    for c in (short, long_):
        _activate(api, c["id"])
        _step(app, cs.plan, c["id"], due, {}, t - timedelta(hours=1))
    # the scheduler was down: the sweep meets both runs 2 minutes late
    assert _step(app, cs.start_due_runs, t + timedelta(minutes=2), {}) == 2
    (expired,) = _runs(app, short["id"])
    (late,) = _runs(app, long_["id"])
    assert expired.status == "expired" and expired.send_id is None
    assert "ttlSeconds passed" in expired.reason and "not sent" in expired.reason
    assert late.status == "running" and late.reason.startswith("sent 120 s late")
    assert _step(app, cs.start_due_runs, t + timedelta(minutes=3), {}) == 0  # once
    _fan_out_all(app)
    _deliver(app)
    assert sorted(_per_address(app).values()) == [1, 1]


def test_broadcast_completes_when_every_message_ended(app, api, project):
    _users(app, project.id, [None] * 3)
    c = _campaign(api)  # no sendAt: now, planned by activate itself
    _activate(api, c["id"])
    now = utcnow() + timedelta(seconds=1)
    assert _step(app, cs.start_due_runs, now, {}) == 1
    _fan_out_all(app)
    assert _step(app, cs.finish_runs, now) == 1
    assert _step(app, cs.complete_campaigns, now) == 0  # messages still queued
    _deliver(app)
    assert _step(app, cs.complete_campaigns, now) == 1
    body = api.get(f"/v1/campaigns/{c['id']}").json
    assert body["status"] == "completed" and body["completedAt"] is not None
    assert body["statusReason"] == "every run finished and every message ended"


def test_recurring_completes_only_after_its_window(app, api, project):
    c = _campaign(
        api,
        kind="recurring",
        schedule={"cron": "0 9 * * *"},
        window={"endsAt": "2026-12-10T00:00:00Z"},
    )
    _activate(api, c["id"])
    assert _step(app, cs.complete_campaigns, datetime(2026, 12, 9, tzinfo=UTC)) == 0
    assert _step(app, cs.complete_campaigns, datetime(2026, 12, 10, tzinfo=UTC)) == 1
    assert api.get(f"/v1/campaigns/{c['id']}").json["status"] == "completed"


def test_a_triggered_campaign_completes_when_its_window_ends(app, api, project):
    c = _campaign(
        api,
        kind="triggered",
        trigger={"event": "signup"},
        window={"endsAt": "2026-12-10T00:00:00Z"},
    )
    _activate(api, c["id"])
    assert _step(app, cs.complete_campaigns, datetime(2026, 12, 9, tzinfo=UTC)) == 0
    assert _step(app, cs.complete_campaigns, datetime(2026, 12, 10, tzinfo=UTC)) == 1
    body = api.get(f"/v1/campaigns/{c['id']}").json
    assert body["status"] == "completed"
    assert body["statusReason"] == "the campaign window ended before anything was sent"


def test_failing_campaign_is_auto_paused_with_the_rate(app, api, project):
    _users(app, project.id, [None] * 30)
    c = _campaign(api)
    _activate(api, c["id"])
    _step(app, cs.start_due_runs, utcnow() + timedelta(seconds=1), {})
    _fan_out_all(app)
    with app.app_context():
        ids = list(db.session.scalars(select(Message.id).order_by(Message.id)))
        # what a provider that rejects them leaves: 15 failed, 5 sent, 10 still queued
        db.session.execute(update(Message).where(Message.id.in_(ids[:15])).values(status="failed"))
        db.session.execute(update(Message).where(Message.id.in_(ids[15:20])).values(status="sent"))
        db.session.commit()
    assert _step(app, cs.auto_pause, utcnow()) == 1
    body = api.get(f"/v1/campaigns/{c['id']}").json
    assert body["status"] == "paused"
    assert body["statusReason"].startswith("auto-paused: 15 of 20 messages failed (75%")
    with app.app_context():
        held = db.session.scalar(
            select(func.count()).where(Message.status == "queued", Message.not_before == cs.HELD)
        )
    assert held == 10


# --- fan-out: holdout and rate --------------------------------------------------------------


def test_holdout_bucket_in_sql_equals_python_and_holdout_users_get_nothing(app, api, project):
    _users(app, project.id, [None] * 300)
    c = _campaign(api, holdoutPercent=20)
    with app.app_context():
        rows = db.session.execute(select(User.id, fanout.holdout_bucket_sql(c["id"])))
        pairs = list(rows)
    assert len(pairs) == 300
    assert all(bucket == holdout_bucket(c["id"], pk) for pk, bucket in pairs)
    expected = {pk for pk, _ in pairs if in_holdout(c["id"], pk, 20)}
    assert 30 < len(expected) < 90
    _activate(api, c["id"])
    _step(app, cs.start_due_runs, utcnow() + timedelta(seconds=1), {})
    _fan_out_all(app)
    with app.app_context():
        held_out = set(db.session.scalars(select(CampaignHoldout.user_id)))
        messaged = set(db.session.scalars(select(Message.user_id)))
        send = db.session.scalar(select(Send))
    assert held_out == expected
    assert messaged == {pk for pk, _ in pairs} - expected
    assert send.skipped == {"holdout": len(expected)}


def test_rate_limit_spreads_messages_and_activation_warns_past_the_ttl(
    app, api, project, monkeypatch
):
    _users(app, project.id, [None] * 300)
    monkeypatch.setattr(fanout, "CHUNK", 70)  # the schedule continues across chunks
    c = _campaign(api, rateLimit={"perMinute": 120}, ttlSeconds=60)
    body = _activate(api, c["id"])
    assert any(
        "rateLimit.perMinute 120" in w and "ttlSeconds (60 s)" in w for w in body["warnings"]
    )
    _step(app, cs.start_due_runs, utcnow() + timedelta(seconds=1), {})
    _fan_out_all(app)
    with app.app_context():
        rows = db.session.execute(
            select(Message.not_before, Message.enqueued_at).order_by(Message.id)
        )
        slots = [nb for nb, enq in rows]
        send = db.session.scalar(select(Send))
        assert db.session.scalar(select(func.count()).where(Message.enqueued_at.is_not(None))) == 0
    start = send.created_at.replace(microsecond=0)
    assert len(slots) == 300 and slots == sorted(slots)
    # 2 per second: position p waits p/2 s; no 60-second span holds more than 120
    assert [(s - start).total_seconds() for s in slots[:5]] == [0, 0, 1, 1, 2]
    assert (slots[-1] - start).total_seconds() == 149
    assert max(sum(1 for s in slots if t <= s < t + timedelta(seconds=60)) for t in slots) == 120


# --- pause and resume in the middle of a fan-out --------------------------------------------


def test_pause_and_resume_in_the_middle_of_a_5000_user_fan_out(
    app, api, project, monkeypatch, request
):
    _users(app, project.id, [None] * 5000)
    monkeypatch.setattr(fanout, "CHUNK", 1000)
    c = _campaign(api)
    _activate(api, c["id"])
    _step(app, cs.start_due_runs, utcnow() + timedelta(seconds=1), {})
    with app.app_context():
        send_id = db.session.scalar(select(Send.id))
    commits = []

    def after_chunk(session):
        commits.append(1)
        if len(commits) == 1:  # a worker delivers some of the first chunk meanwhile
            with app.app_context():
                first = list(db.session.scalars(select(Message.id).order_by(Message.id)))
            _deliver(app, first[:300])
        if len(commits) == 2:  # the fan-out committed its 2nd chunk: pause now
            with app.app_context():
                r = api.post(f"/v1/campaigns/{c['id']}/pause")
                assert r.status_code == 200, r.json

    with app.app_context(), db.sessionmaker() as session:
        event.listen(session, "after_commit", after_chunk)
        fanout.fan_out(session, send_id)
    with app.app_context():
        counts = dict(
            db.session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        )
        send = db.session.get(Send, send_id)
        held = db.session.scalar(select(func.count()).where(Message.not_before == cs.HELD))
    # the fan-out stopped at the pause: 2 of 5 chunks, 300 sent, the rest held
    assert (send.status, counts, held) == ("paused", {"sent": 300, "queued": 1700}, 1700)
    _deliver(app)  # a delivery job arriving now claims nothing
    request.getfixturevalue("workers")  # workers from here on; nothing runs while paused
    assert sum(_per_address(app).values()) == 300
    body = _activate(api, c["id"])  # resume
    assert body["status"] == "active"
    # The scheduler's sweeper heals what a loaded machine loses (a delivery job failing on a
    # locked SQLite): as in production, it runs beside the workers.
    settings = {**app.config, "REQUEUE_AFTER_SECONDS": 5}
    last = [0.0]

    def all_sent() -> bool:
        if time.monotonic() - last[0] > 1:
            last[0] = time.monotonic()
            with app.app_context(), db.sessionmaker() as session:
                sweep(session, utcnow(), settings)
        return sum(_per_address(app).values()) == 5000

    try:
        wait_for(all_sent, timeout=120)
    except AssertionError:
        # Seen twice in full suite runs, never alone: say where the rest stood.
        with app.app_context():
            statuses = db.session.execute(
                select(Message.status, func.count()).group_by(Message.status)
            ).all()
            sends = db.session.execute(
                select(Send.id, Send.status, Send.cursor, Send.lease_until)
            ).all()
            held = db.session.scalar(select(func.count()).where(Message.not_before == cs.HELD))
            reasons = db.session.execute(
                select(Message.status, Message.reason, func.count())
                .where(Message.status != "sent")
                .group_by(Message.status, Message.reason)
            ).all()
        raise AssertionError(
            f"not all 5000 sent: messages {statuses}, held {held}, sends {sends},"
            f" not sent by reason {reasons}"
        ) from None
    per = _per_address(app)
    assert len(per) == 5000 and set(per.values()) == {1}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == 5000


# --- the real scheduler ---------------------------------------------------------------------


def _service(app):
    from workers import runtime
    from workers.scheduler import SchedulerService

    runtime.configure(engine=db.engine, settings=dict(app.config))
    service = SchedulerService(db.engine, dict(app.config))
    service.start()
    return service


def _jobs(app) -> list[str]:
    from sqlalchemy import inspect

    with app.app_context(), db.engine.connect() as conn:
        if not inspect(conn).has_table("apscheduler_jobs"):  # created by the first scheduler
            return []
        return sorted(conn.execute(text("SELECT id FROM apscheduler_jobs")).scalars())


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_broadcast_two_seconds_ahead_is_sent_by_the_scheduler(app, api, project, workers):
    _users(app, project.id, [None] * 5)
    send_at = utcnow() + timedelta(seconds=2)
    c = _campaign(api, schedule={"sendAt": _iso(send_at)})
    _activate(api, c["id"])
    service = _service(app)
    try:
        wait_for(lambda: f"campaign:{c['id']}" in _jobs(app), timeout=30)
        wait_for(lambda: sum(_per_address(app).values()) == 5, timeout=30)
        with app.app_context():
            sent = db.session.scalar(select(func.min(Message.sent_at)))
        assert sent >= send_at
        assert set(_per_address(app).values()) == {1}
        wait_for(lambda: f"campaign:{c['id']}" not in _jobs(app), timeout=30)
    finally:
        service.stop()


def test_scheduler_stopped_and_restarted_around_a_due_broadcast(app, api, project, workers):
    _users(app, project.id, [None] * 5)
    send_at = utcnow().replace(microsecond=0) + timedelta(seconds=3)
    c = _campaign(api, schedule={"sendAt": _iso(send_at)})
    _activate(api, c["id"])
    job = f"campaign:{c['id']}"
    service = _service(app)
    try:
        wait_for(lambda: job in _jobs(app), timeout=30)
    finally:
        service.stop()
    # down across the due time: nothing happens, the job waits in the persistent store
    wait_for(lambda: utcnow() > send_at + timedelta(seconds=1), timeout=10)
    assert _runs(app, c["id"]) == [] and _jobs(app).count(job) == 1
    service = _service(app)
    try:
        wait_for(lambda: sum(_per_address(app).values()) == 5, timeout=30)
        wait_for(lambda: job not in _jobs(app), timeout=30)
    finally:
        service.stop()
    # and once more: a restart after it was sent re-arms nothing
    service = _service(app)
    try:
        wait_for(lambda: service.active.is_set(), timeout=30)
        with app.app_context(), db.sessionmaker() as session:
            assert cs.desired_jobs(session, utcnow()) == {}
    finally:
        service.stop()
    (run,) = _runs(app, c["id"])
    assert run.status in ("running", "done") and run.send_id is not None
    per = _per_address(app)
    assert len(per) == 5 and set(per.values()) == {1}


def test_sweep_task_is_registered():
    from workers.sweeps import TASKS

    assert campaign_runs in TASKS


def test_job_store_follows_activate_pause_resume_edit_and_archive(app, api, project):
    _users(app, project.id, [None])
    c = _campaign(api, schedule={"sendAt": "2030-01-01T09:00:00Z"})
    job = f"campaign:{c['id']}"

    def desired():
        with app.app_context(), db.sessionmaker() as session:
            return cs.desired_jobs(session, utcnow())

    assert desired() == {}  # a draft has no job
    _activate(api, c["id"])
    at = datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert desired() == {job: (at, (c["id"], "2030-01-01T09:00:00Z"))}
    api.post(f"/v1/campaigns/{c['id']}/pause")
    assert desired() == {}
    r = api.patch(f"/v1/campaigns/{c['id']}", json={"schedule": {"sendAt": "2030-01-02T09:00:00Z"}})
    assert r.status_code == 200, r.json
    _activate(api, c["id"])
    assert desired()[job][1] == (c["id"], "2030-01-02T09:00:00Z")
    # fired and planned: no job any more (a restart re-arms nothing)
    _step(app, cs.plan, c["id"], "2030-01-02T09:00:00Z", {}, utcnow())
    assert desired() == {}
    api.post(f"/v1/campaigns/{c['id']}/archive")
    (run,) = _runs(app, c["id"])
    assert (run.status, run.reason) == ("cancelled", "campaign archived")


def test_recurring_local_time_plans_each_zone_at_its_wall_time(app, api, project):
    _users(app, project.id, ["Europe/Paris", "America/New_York"])
    c = _campaign(
        api, kind="recurring", schedule={"cron": "30 2 * * *", "deliverIn": "userTimezone"}
    )
    _activate(api, c["id"])
    with app.app_context():
        campaign = db.session.get(Campaign, c["id"])
        occ, fire_at = cs.next_occurrence(campaign, "2027-03-27T02:30:00", utcnow())
    assert occ == "2027-03-28T02:30:00"  # Europe's spring-forward night, as a wall time
    _step(app, cs.plan, c["id"], occ, {}, fire_at)
    due = {r.zone: r.due_at for r in _runs(app, c["id"])}
    assert due["Europe/Paris"] == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert due["America/New_York"] == datetime(2027, 3, 28, 6, 30, tzinfo=UTC)  # EDT already
